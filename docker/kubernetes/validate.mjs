// validate.mjs - checks every object in this folder's manifests against the
// Kubernetes API schema, offline (kubernetes-models ships the OpenAPI schemas
// of the API's types): node validate.mjs. Exits 1 naming the file, object and
// field on the first error.
import { readFileSync, readdirSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const here = new URL(".", import.meta.url).pathname;
const files = readdirSync(here).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml");
let objects = 0;
for (const file of files.sort()) {
  for (const doc of parseAllDocuments(readFileSync(here + file, "utf8"))) {
    if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0].message}`);
    const obj = doc.toJS();
    if (obj == null) continue;
    const [group, version] = obj.apiVersion.includes("/") ? obj.apiVersion.split("/") : [null, obj.apiVersion];
    const module = group ? `kubernetes-models/${group}/${version}` : `kubernetes-models/${version}`;
    const Model = (await import(module))[obj.kind];
    if (!Model) throw new Error(`${file}: no schema for ${obj.apiVersion} ${obj.kind}`);
    try {
      new Model(obj).validate();
    } catch (e) {
      console.error(`${file}: ${obj.kind} ${obj.metadata?.name}: ${e.message}`);
      process.exit(1);
    }
    objects++;
  }
}
console.log(`validate.mjs: ${objects} objects in ${files.length} files match the Kubernetes schema`);
