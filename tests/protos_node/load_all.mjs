// Loads every .proto under the folder given with @grpc/proto-loader, as a client in another
// language would: nothing but that folder on the include path. Prints the services it found.
import fs from "node:fs";
import path from "node:path";
import loader from "@grpc/proto-loader";

const root = process.argv[2];
const files = fs.readdirSync(root, { recursive: true })
  .filter((f) => f.endsWith(".proto"))
  .map((f) => f.split(path.sep).join("/"));
const definition = loader.loadSync(files, { includeDirs: [root] });
const services = Object.entries(definition)
  .filter(([, value]) => !value.format && typeof value === "object" && Object.values(value).some((m) => m.path))
  .map(([name]) => name);
console.log(JSON.stringify(services.sort()));
