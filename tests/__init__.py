"""The project's tests. Importing this package comes before anything in it imports gRPC, in a
pytest session and in the drivers under tools/ that use its helpers: the one place to set what
gRPC reads when it is first imported."""

import os

# The tests start processes (subprocess: fork, then exec) while gRPC's threads run. gRPC's fork
# handlers then crash some of those children before they exec (seen: PostgreSQL failing to
# start with "Fatal Python error: Segmentation fault"). Nothing here uses gRPC in a forked
# child, so the handlers are switched off.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
