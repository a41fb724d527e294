"""The KurrentDB port: a second gRPC server on the store's event loop, beside our own.

It serves Streams (`streams.KurrentStreams`), PersistentSubscriptions over our consumer groups
(`persistent`), and Gossip (this one node, as leader, so clients that discover a cluster find
it). Everything else KurrentDB offers (projections, operations, users) answers UNIMPLEMENTED,
gRPC's answer for an unknown service.
"""

from __future__ import annotations

import socket
import time
import uuid

import grpc

from contracts.kurrentdb.protocols.v1 import gossip_pb2, persistent_pb2, shared_pb2, streams_pb2
from eventstore_server.handling import Context
from eventstore_server.kurrentdb.persistent import KurrentPersistentSubscriptions
from eventstore_server.kurrentdb.streams import KurrentStreams
from eventstore_server.service import EventStoreService
from hosting.grpc_server import service_handlers
from hosting.security import ServerTLS, add_port

STREAMS = streams_pb2.DESCRIPTOR.services_by_name["Streams"]
GOSSIP = gossip_pb2.DESCRIPTOR.services_by_name["Gossip"]
PERSISTENT = persistent_pb2.DESCRIPTOR.services_by_name["PersistentSubscriptions"]


class Gossip:
    """Cluster discovery: one member, this node, the leader."""

    def __init__(self, host: str, port: int) -> None:
        self._member = gossip_pb2.MemberInfo(
            instance_id=shared_pb2.UUID(string=str(uuid.uuid4())),
            state=gossip_pb2.MemberInfo.VNodeState.Leader,
            is_alive=True,
            http_end_point=gossip_pb2.EndPoint(address=host, port=port),
        )

    async def Read(self, request: shared_pb2.Empty, context: Context) -> gossip_pb2.ClusterInfo:
        member = gossip_pb2.MemberInfo()
        member.CopyFrom(self._member)
        member.time_stamp = time.time_ns() // 100  # ticks, as KurrentDB's clocks
        return gossip_pb2.ClusterInfo(members=[member])


def advertised_address(listen: str, advertise: str, port: int) -> tuple[str, int]:
    """What gossip tells clients to dial, as KurrentDB's AdvertiseHostToClientAs does: the
    configured HOST[:PORT]; else the listen host, unless it is a wildcard, which no client can
    dial: then this machine's address (a pod's IP on Kubernetes). Behind a Service or a proxy,
    configure the name clients use (gRPC's Python server does not show a call's :authority, so
    the name a client dialled cannot be read back)."""
    if advertise:
        host, colon, given = advertise.rpartition(":")
        if colon and given.isdigit() and (host.endswith("]") or ":" not in host):
            return host.strip("[]"), int(given)
        return advertise.strip("[]"), port
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host not in ("", "0.0.0.0", "::"):
        return host, port
    try:
        return socket.gethostbyname(socket.gethostname()), port
    except OSError:
        return socket.gethostname(), port


async def start(
    store: EventStoreService,
    listen: str,
    tls: ServerTLS | None,
    options: list[tuple[str, int]],
    advertise: str = "",
) -> tuple[grpc.aio.Server, int]:
    """Start the KurrentDB port; the server and the port it took."""
    server = grpc.aio.server(options=options)
    port = add_port(server, listen, tls)
    advertised, advertised_port = advertised_address(listen, advertise, port)
    server.add_generic_rpc_handlers(
        (
            service_handlers(KurrentStreams(store), STREAMS),
            service_handlers(KurrentPersistentSubscriptions(store), PERSISTENT),
            service_handlers(Gossip(advertised, advertised_port), GOSSIP),
        )
    )
    await server.start()
    return server, port
