/**
 * deploy/kubernetes: every kustomization resolved (resources, components, namespace, images,
 * patches: what the manifests here use of Kustomize) and every object validated against the
 * Kubernetes schemas (kubernetes-models), then checked for what moat needs: the orchestrator a
 * privileged host-network DaemonSet on moat.dev/node=true nodes with its state and named network
 * namespaces shared with the host, API and proxy unprivileged, every flag and variable one the
 * command has, secrets only from Secrets, every reference resolvable. Where `kubectl` is installed
 * (it is not a Debian package, so not in CI), `kubectl kustomize` output is validated too.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import { parseAllDocuments } from "yaml";
import { SECRETS, SURFACE, surfaceProblems } from "./deploy-surface.js";

const root = path.resolve(import.meta.dirname, "../../..");
const k8s = path.join(root, "deploy/kubernetes");
const KUSTOMIZATIONS = ["base", "overlays/example"];

// biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects of every kind, validated below.
type K8sObject = any;

function readDocs(file: string): K8sObject[] {
  return parseAllDocuments(readFileSync(file, "utf8"))
    .map((doc) => {
      assert.equal(doc.errors.length, 0, `${file}: ${doc.errors.join("; ")}`);
      return doc.toJS();
    })
    .filter((o) => o !== null);
}

/** The objects `kustomize build <dir>` makes, for the features these manifests use. */
function build(dir: string): K8sObject[] {
  const file = path.join(dir, "kustomization.yaml");
  assert.ok(existsSync(file), `${dir} has no kustomization.yaml`);
  const [k] = readDocs(file);
  const known = ["apiVersion", "kind", "namespace", "labels", "resources", "components", "images", "patches"];
  for (const key of Object.keys(k))
    assert.ok(known.includes(key), `${file}: ${key} is not resolved by this test; teach build() or avoid it`);
  const objects: K8sObject[] = [];
  for (const entry of [...(k.resources ?? []), ...(k.components ?? [])]) {
    const target = path.resolve(dir, entry);
    assert.ok(existsSync(target), `${file}: ${entry} does not exist`);
    objects.push(...(statSync(target).isDirectory() ? build(target) : readDocs(target)));
  }
  for (const patch of k.patches ?? []) {
    const docs = readDocs(path.resolve(dir, patch.path));
    if (patch.target) {
      const obj = find(objects, patch.target.kind, patch.target.name, `${file}: patch ${patch.path}`);
      for (const op of docs[0]) applyJSONPatch(obj, op, `${file}: ${patch.path}`);
    } else {
      for (const doc of docs)
        merge(find(objects, doc.kind, doc.metadata.name, `${file}: patch ${patch.path}`), doc);
    }
  }
  for (const o of objects) {
    if (k.namespace && o.kind !== "Namespace") o.metadata.namespace = k.namespace;
    for (const { pairs } of k.labels ?? []) o.metadata.labels = { ...o.metadata.labels, ...pairs };
    for (const c of containers(o)) {
      const image = (k.images ?? []).find((i: { name: string }) => i.name === c.image);
      if (image) c.image = `${image.newName ?? image.name}${image.newTag ? `:${image.newTag}` : ""}`;
    }
  }
  return objects;
}

function find(objects: K8sObject[], kind: string, name: string, what: string): K8sObject {
  const found = objects.find((o) => o.kind === kind && o.metadata?.name === name);
  assert.ok(found, `${what}: no ${kind} ${name} to patch`);
  return found;
}

/** A strategic merge patch as far as maps go (these manifests patch no lists that way). */
function merge(into: K8sObject, patch: K8sObject): void {
  for (const [key, value] of Object.entries(patch)) {
    if (value && typeof value === "object" && !Array.isArray(value) && typeof into[key] === "object")
      merge(into[key], value);
    else into[key] = value;
  }
}

function applyJSONPatch(
  obj: K8sObject,
  op: { op: string; path: string; value: unknown },
  what: string,
): void {
  const keys = op.path.split("/").slice(1);
  const last = keys.pop() as string;
  let at = obj;
  for (const key of keys) {
    at = at[key];
    assert.ok(at !== undefined, `${what}: ${op.path} does not exist`);
  }
  assert.ok(["add", "replace"].includes(op.op), `${what}: op ${op.op} is not resolved by this test`);
  if (op.op === "replace") assert.ok(last in at, `${what}: ${op.path} does not exist`);
  at[last] = op.value;
}

function podSpec(o: K8sObject): K8sObject | undefined {
  return o.spec?.template?.spec;
}

function containers(o: K8sObject): K8sObject[] {
  const spec = podSpec(o);
  return spec ? [...(spec.initContainers ?? []), ...spec.containers] : [];
}

/** Each object through kubernetes-models' schema for its apiVersion and kind. */
async function validate(objects: K8sObject[]): Promise<void> {
  for (const o of objects) {
    const module = await import(`kubernetes-models/${o.apiVersion}/${o.kind}`).catch(() => undefined);
    assert.ok(module, `${o.apiVersion} ${o.kind} (${o.metadata?.name}): no schema in kubernetes-models`);
    const Model = module[o.kind];
    assert.doesNotThrow(() => new Model(o).validate(), `${o.kind} ${o.metadata?.name} is not valid`);
  }
}

/** Checks a resolved deployment: moat's requirements on top of the schemas. */
function checkMoat(objects: K8sObject[], where: string, requireSecrets: boolean): void {
  const byKind = (kind: string) => objects.filter((o) => o.kind === kind);
  const named = (kind: string, name: string) =>
    objects.find((o) => o.kind === kind && o.metadata.name === name);

  const orchestrator = named("DaemonSet", "moat-orchestrator");
  assert.ok(orchestrator, `${where}: no DaemonSet moat-orchestrator`);
  const node = podSpec(orchestrator);
  assert.deepEqual(node.nodeSelector, { "moat.dev/node": "true" });
  assert.equal(node.hostNetwork, true);
  assert.equal(
    node.dnsPolicy,
    "ClusterFirstWithHostNet",
    "host-network pods need it to resolve the API's Service",
  );
  const [orch] = node.containers;
  assert.equal(orch.securityContext?.privileged, true);
  assert.equal(orch.args[0], "orchestrator");
  assert.equal(orch.resources?.limits, undefined, "a limit would bound the sandboxes too");
  for (const mountPath of ["/var/lib/moat", "/run/netns"]) {
    const mount = orch.volumeMounts.find((m: K8sObject) => m.mountPath === mountPath);
    assert.ok(mount, `${where}: orchestrator has no ${mountPath}`);
    assert.equal(mount.mountPropagation, "Bidirectional", `${mountPath} must propagate both ways`);
    const volume = node.volumes.find((v: K8sObject) => v.name === mount.name);
    assert.equal(volume.hostPath?.path, mountPath, `${mountPath} must be the host's`);
  }

  for (const name of ["moat-api", "moat-proxy"]) {
    const deployment = named("Deployment", name);
    assert.ok(deployment, `${where}: no Deployment ${name}`);
    const spec = podSpec(deployment);
    assert.equal(spec.securityContext?.runAsNonRoot, true, `${name} needs no root`);
    assert.ok(!spec.hostNetwork, `${name} needs no host network`);
    for (const c of spec.containers) {
      assert.equal(c.securityContext?.privileged ?? false, false);
      assert.equal(c.securityContext?.allowPrivilegeEscalation, false);
    }
    assert.ok(deployment.spec.replicas >= 2, `${name}: one replica is a single point of failure`);
  }

  // Every moat container: its command, flags and variables are the CLI's, secrets come from Secrets.
  for (const o of objects) {
    for (const c of containers(o)) {
      if (!/(^|\/)moat(:|$)/.test(c.image)) continue;
      const env: K8sObject[] = c.env ?? [];
      const problems = surfaceProblems(
        `${where}: ${o.kind} ${o.metadata.name}`,
        c.args ?? [],
        env.map((e) => e.name),
      );
      assert.deepEqual(problems, []);
      assert.ok((c.args?.[0] as string) in SURFACE);
      assert.equal(
        c.envFrom,
        undefined,
        `${o.metadata.name}: each variable by name, so the checks above see it`,
      );
      for (const e of env) {
        if (SECRETS.includes(e.name))
          assert.ok(
            e.valueFrom?.secretKeyRef,
            `${o.metadata.name}: ${e.name} must come from a Secret, not the manifest`,
          );
      }
      for (const arg of c.args ?? []) {
        for (const [, ref] of (arg as string).matchAll(/\$\((\w+)\)/g))
          assert.ok(
            env.some((e) => e.name === ref),
            `${o.metadata.name}: ${arg} refers to $(${ref}), which is not set`,
          );
      }
    }
  }
  for (const cm of byKind("ConfigMap")) {
    for (const key of Object.keys(cm.data ?? {}))
      assert.ok(!SECRETS.includes(key), `ConfigMap ${cm.metadata.name} holds ${key}: secrets go in a Secret`);
  }

  // References resolve: config keys, secret keys (unless optional), claims, Service selectors and ports.
  for (const o of objects) {
    for (const c of containers(o)) {
      for (const e of c.env ?? []) {
        const cm = e.valueFrom?.configMapKeyRef;
        if (cm && !cm.optional)
          assert.ok(
            named("ConfigMap", cm.name)?.data?.[cm.key] !== undefined,
            `${o.metadata.name}: ${cm.name}/${cm.key} missing`,
          );
        const secret = e.valueFrom?.secretKeyRef;
        if (secret && !secret.optional && requireSecrets) {
          const s = named("Secret", secret.name);
          assert.ok(
            (s?.stringData ?? s?.data)?.[secret.key] !== undefined,
            `${o.metadata.name}: ${secret.name}/${secret.key} missing`,
          );
        }
      }
    }
    for (const v of podSpec(o)?.volumes ?? []) {
      if (v.persistentVolumeClaim)
        assert.ok(
          named("PersistentVolumeClaim", v.persistentVolumeClaim.claimName),
          `${o.metadata.name}: claim missing`,
        );
    }
  }
  for (const service of byKind("Service")) {
    const pods = objects.filter((o) =>
      Object.entries(service.spec.selector).every(([k, v]) => o.spec?.template?.metadata?.labels?.[k] === v),
    );
    assert.equal(pods.length, 1, `Service ${service.metadata.name} selects ${pods.length} workloads`);
    const ports = containers(pods[0]).flatMap((c) => c.ports ?? []);
    const names = service.spec.ports.map((p: K8sObject) => p.name);
    assert.equal(new Set(names).size, names.length, `Service ${service.metadata.name}: port names repeat`);
    for (const p of service.spec.ports)
      assert.ok(
        ports.some((cp: K8sObject) => cp.name === p.targetPort || cp.containerPort === p.targetPort),
        `Service ${service.metadata.name}: targetPort ${p.targetPort} is no container port`,
      );
  }
}

describe("deploy/kubernetes", () => {
  for (const dir of KUSTOMIZATIONS) {
    test(`${dir}: every object is valid against the Kubernetes schemas and gives moat what it needs`, async () => {
      const objects = build(path.join(k8s, dir));
      assert.ok(objects.length > 0);
      await validate(objects);
      checkMoat(objects, dir, dir !== "base");
    });
  }

  test("the example's Secret placeholders are too short to be accepted as a node token", () => {
    const secrets = build(path.join(k8s, "overlays/example")).filter((o) => o.kind === "Secret");
    const token = secrets.find((s) => s.metadata.name === "moat-secrets")?.stringData?.MOAT_NODE_TOKEN;
    assert.ok(
      typeof token === "string" && token.length < 32,
      "a usable token in the repository would be everyone's",
    );
  });

  test("every YAML file under deploy/kubernetes is used by a kustomization", () => {
    const used = new Set<string>();
    const visit = (dir: string) => {
      const file = path.join(dir, "kustomization.yaml");
      used.add(file);
      const [k] = readDocs(file);
      for (const entry of [...(k.resources ?? []), ...(k.components ?? [])]) {
        const target = path.resolve(dir, entry);
        if (statSync(target).isDirectory()) visit(target);
        else used.add(target);
      }
      for (const p of k.patches ?? []) used.add(path.resolve(dir, p.path));
    };
    for (const dir of KUSTOMIZATIONS) visit(path.join(k8s, dir));
    const all = spawnSync("find", [k8s, "-name", "*.yaml"], { encoding: "utf8" }).stdout.trim().split("\n");
    assert.deepEqual(
      all.filter((f) => !used.has(f)),
      [],
    );
  });

  const kubectl = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8" });
  test("kubectl kustomize builds the same objects, valid as well", {
    skip: kubectl.status !== 0 && "kubectl is not installed",
  }, async () => {
    for (const dir of KUSTOMIZATIONS) {
      const out = spawnSync("kubectl", ["kustomize", path.join(k8s, dir)], { encoding: "utf8" });
      assert.equal(out.status, 0, out.stderr);
      const objects = parseAllDocuments(out.stdout).map((d) => d.toJS());
      await validate(objects);
      checkMoat(objects, `kubectl kustomize ${dir}`, dir !== "base");
      const ids = (list: K8sObject[]) =>
        list.map((o) => `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`).sort();
      assert.deepEqual(ids(objects), ids(build(path.join(k8s, dir))));
    }
  });
});
