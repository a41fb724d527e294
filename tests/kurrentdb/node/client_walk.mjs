// KurrentDB's Node.js client (its reads run through its Rust bridge) against our KurrentDB
// port: appends, a conflict, reads both ways, $all, a catch-up-then-live subscription and a
// delete. Prints one JSON line of what it saw; tests/kurrentdb/test_node_client.py checks it.
import {
  BACKWARDS,
  END,
  FORWARDS,
  KurrentDBClient,
  NO_STREAM,
  START,
  jsonEvent,
} from "@kurrent/kurrentdb-client";

const [address, stream] = process.argv.slice(2);
const client = KurrentDBClient.connectionString(`kurrentdb://${address}?tls=false`);
const seen = {};
const appended = await client.appendToStream(
  stream,
  [jsonEvent({ type: "Opened", data: { n: 1 } }), jsonEvent({ type: "Noted", data: { n: 2 } })],
  { streamState: NO_STREAM },
);
seen.append = { revision: Number(appended.nextExpectedRevision), commit: Number(appended.position.commit) };
try {
  await client.appendToStream(stream, jsonEvent({ type: "Late", data: {} }), { streamState: NO_STREAM });
  seen.conflict = "none";
} catch (error) {
  seen.conflict = { type: error.type, actual: Number(error.actualState ?? error.actualVersion) };
}
seen.forwards = [];
for await (const e of client.readStream(stream, { fromRevision: START, direction: FORWARDS })) {
  seen.forwards.push({ type: e.event.type, revision: Number(e.event.revision), data: e.event.data });
}
seen.backwards = [];
for await (const e of client.readStream(stream, { fromRevision: END, direction: BACKWARDS, maxCount: 1 })) {
  seen.backwards.push(e.event.type);
}
seen.allBackwards = [];
for await (const e of client.readAll({ fromPosition: END, direction: BACKWARDS, maxCount: 2 })) {
  seen.allBackwards.push({ stream: e.event.streamId, type: e.event.type });
}
seen.subscribed = [];
const subscription = client.subscribeToStream(stream, { fromRevision: START });
let live = false;
for await (const e of subscription) {
  seen.subscribed.push(e.event.type);
  if (seen.subscribed.length === 2 && !live) {
    live = true;
    await client.appendToStream(stream, jsonEvent({ type: "Live", data: {} }));
  }
  if (seen.subscribed.length === 3) break;
}
await subscription.unsubscribe();
await client.deleteStream(stream);
try {
  for await (const e of client.readStream(stream)) seen.afterDelete = e.event.type;
} catch (error) {
  seen.afterDelete = error.type;
}
await client.dispose();
console.log(JSON.stringify(seen));
