// Static checks of the deployment files in deploy/: nothing is built or run
// (there may be no Docker engine or cluster), but every file is parsed and the
// pieces are checked against each other and against the repository.
import { describe, it, expect } from "vitest";
import { parseAllDocuments, parse } from "yaml";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const deployDir = join(root, "deploy");
const k8sDir = join(deployDir, "k8s");
const read = (path: string): string => readFileSync(path, "utf8");

const SERVICES = ["ingest", "scheduler", "executor"] as const;
/** The port of each service: its RPCs (none for the scheduler), GET /healthz and GET /metrics. */
const PORTS = { ingest: 8288, scheduler: 8290, executor: 8289 } as const;
const PORT_SETTINGS = { ingest: "INGEST_PORT", scheduler: "SCHEDULER_PORT", executor: "EXECUTOR_PORT" } as const;
const NAMESPACE = "stepwise";

// ---------------------------------------------------------------------------
// Narrowing helpers for parsed YAML (everything is `unknown` until checked).

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
function obj(v: unknown, what: string): Obj {
  if (!isObj(v)) throw new Error(`${what}: expected a mapping, got ${JSON.stringify(v)}`);
  return v;
}
function arr(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new Error(`${what}: expected a sequence, got ${JSON.stringify(v)}`);
  return v;
}
function str(v: unknown, what: string): string {
  if (typeof v !== "string") throw new Error(`${what}: expected a string, got ${JSON.stringify(v)}`);
  return v;
}
function num(v: unknown, what: string): number {
  if (typeof v !== "number") throw new Error(`${what}: expected a number, got ${JSON.stringify(v)}`);
  return v;
}
/** Walks a dotted path ("spec.template.spec.containers.0"); undefined when absent. */
function get(v: unknown, path: string): unknown {
  let cur: unknown = v;
  for (const key of path.split(".")) {
    if (Array.isArray(cur)) cur = cur[Number(key)];
    else if (isObj(cur)) cur = cur[key];
    else return undefined;
  }
  return cur;
}
function strRecord(v: unknown, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(obj(v, what))) out[k] = str(val, `${what}.${k}`);
  return out;
}
/** A compose `environment`, written as a mapping or as a list of KEY=VALUE. */
function envRecord(v: unknown): Record<string, string> {
  if (Array.isArray(v)) {
    return Object.fromEntries(
      v.map((kv) => {
        const s = String(kv);
        const eq = s.indexOf("=");
        return eq < 0 ? [s, ""] : [s.slice(0, eq), s.slice(eq + 1)];
      }),
    );
  }
  return Object.fromEntries(Object.entries(obj(v, "environment")).map(([k, x]) => [k, String(x)]));
}
function isSubset(sub: Record<string, string>, sup: Record<string, string>): boolean {
  return Object.entries(sub).every(([k, v]) => sup[k] === v);
}

function yamlFilesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) out.push(...yamlFilesUnder(path));
    else if (/\.ya?ml$/.test(entry)) out.push(path);
  }
  return out.sort();
}

// ---------------------------------------------------------------------------
// A small parser for the NATS configuration format (the subset in use:
// `key: value` / `key = value` / `key { ... }`, arrays, comments, $VARS).

type ConfValue = string | number | boolean | ConfValue[] | ConfMap;
interface ConfMap {
  [key: string]: ConfValue;
}

function parseNatsConf(text: string): ConfMap {
  let i = 0;
  const at = (): string => text.charAt(i);
  const skipSeparators = (): void => {
    while (i < text.length) {
      const c = at();
      if (/[\s,;]/.test(c)) i++;
      else if (c === "#" || text.startsWith("//", i)) {
        while (i < text.length && at() !== "\n") i++;
      } else break;
    }
  };
  const skipBlanks = (): void => {
    while (i < text.length && /[ \t]/.test(at())) i++;
  };
  const parseValue = (): ConfValue => {
    const c = at();
    if (c === "{") {
      i++;
      return parseMap("}");
    }
    if (c === "[") {
      i++;
      const items: ConfValue[] = [];
      for (;;) {
        skipSeparators();
        if (i >= text.length) throw new Error("unterminated array");
        if (at() === "]") {
          i++;
          return items;
        }
        items.push(parseValue());
      }
    }
    if (c === '"' || c === "'") {
      const end = text.indexOf(c, i + 1);
      if (end < 0) throw new Error("unterminated string");
      const s = text.slice(i + 1, end);
      i = end + 1;
      return s;
    }
    const start = i;
    while (i < text.length && !/[\s,;\]}#]/.test(at())) i++;
    const word = text.slice(start, i);
    if (word === "") throw new Error(`expected a value at offset ${start}`);
    if (/^-?\d+$/.test(word)) return Number(word);
    if (word === "true" || word === "false") return word === "true";
    return word;
  };
  const parseMap = (end: string | null): ConfMap => {
    const out: ConfMap = {};
    for (;;) {
      skipSeparators();
      if (i >= text.length) {
        if (end !== null) throw new Error(`missing "${end}"`);
        return out;
      }
      if (at() === end) {
        i++;
        return out;
      }
      const start = i;
      while (i < text.length && !/[\s:={]/.test(at())) i++;
      const key = text.slice(start, i);
      if (key === "") throw new Error(`expected a key at offset ${start}`);
      skipBlanks();
      if (at() === ":" || at() === "=") {
        i++;
        skipBlanks();
      }
      out[key] = parseValue();
    }
  };
  return parseMap(null);
}

function confMap(v: ConfValue | undefined, what: string): ConfMap {
  if (typeof v !== "object" || Array.isArray(v)) throw new Error(`${what}: expected a block`);
  return v;
}

// ---------------------------------------------------------------------------
// Loaded files.

const rootPkg = obj(JSON.parse(read(join(root, "package.json"))), "package.json");
const workspaces = arr(rootPkg.workspaces, "workspaces").map((w, n) => str(w, `workspaces[${n}]`));
const configSource = read(join(root, "services/core/src/runtime/config.ts"));

interface K8sDoc {
  file: string;
  apiVersion: string;
  kind: string;
  name: string;
  namespace: string | undefined;
  body: Obj;
}

function loadK8s(): K8sDoc[] {
  const docs: K8sDoc[] = [];
  for (const file of readdirSync(k8sDir).filter((f) => /\.ya?ml$/.test(f) && f !== "kustomization.yaml")) {
    for (const doc of parseAllDocuments(read(join(k8sDir, file)))) {
      const body = obj(doc.toJS(), file);
      const where = `${file}: ${String(body.kind)}`;
      const ns = get(body, "metadata.namespace");
      docs.push({
        file,
        apiVersion: str(body.apiVersion, `${where} apiVersion`),
        kind: str(body.kind, `${file} kind`),
        name: str(get(body, "metadata.name"), `${where} metadata.name`),
        namespace: ns === undefined ? undefined : str(ns, `${where} metadata.namespace`),
        body,
      });
    }
  }
  return docs;
}

const k8s = loadK8s();
const ofKind = (kind: string): K8sDoc[] => k8s.filter((d) => d.kind === kind);
function one(kind: string, name: string): K8sDoc {
  const found = k8s.filter((d) => d.kind === kind && d.name === name);
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name}, found ${found.length}`);
  return found[0] as K8sDoc;
}

const podSpec = (d: K8sDoc): Obj => obj(get(d.body, "spec.template.spec"), `${d.kind} ${d.name} pod spec`);
const podLabels = (d: K8sDoc): Record<string, string> =>
  strRecord(get(d.body, "spec.template.metadata.labels"), `${d.kind} ${d.name} pod labels`);
const containers = (d: K8sDoc): Obj[] =>
  arr(podSpec(d).containers, `${d.name} containers`).map((c, n) => obj(c, `${d.name} container ${n}`));
function onlyContainer(d: K8sDoc): Obj {
  const cs = containers(d);
  expect(cs, `${d.name} has one container`).toHaveLength(1);
  return cs[0] as Obj;
}
/** Resolves a probe/target port (number or container port name) to a number. */
function resolvePort(container: Obj, port: unknown): number | undefined {
  if (typeof port === "number") return port;
  const ports = (get(container, "ports") as unknown[] | undefined) ?? [];
  for (const p of ports) {
    if (get(p, "name") === port) return num(get(p, "containerPort"), "containerPort");
  }
  return undefined;
}
const containerPorts = (c: Obj): number[] =>
  ((get(c, "ports") as unknown[] | undefined) ?? []).map((p) => num(get(p, "containerPort"), "containerPort"));

const workloads = (): K8sDoc[] => [...ofKind("Deployment"), ...ofKind("StatefulSet")];
/** The workloads (Deployments, StatefulSets) whose pods a label selector picks. */
function selected(namespace: string | undefined, selector: Record<string, string>): K8sDoc[] {
  return workloads().filter((w) => w.namespace === namespace && isSubset(selector, podLabels(w)));
}
/** The Service a cluster host name ("svc", "svc.ns", "svc.ns.svc.cluster.local") refers to. */
function serviceForHost(host: string): K8sDoc {
  const [name, ns] = host.split(".");
  if (ns !== undefined) expect(ns, `namespace in ${host}`).toBe(NAMESPACE);
  return one("Service", str(name, host));
}
function servicePorts(svc: K8sDoc): number[] {
  return arr(get(svc.body, "spec.ports"), `${svc.name} ports`).map((p) => num(get(p, "port"), `${svc.name} port`));
}

const configMap = one("ConfigMap", "stepwise-config");
const configData = strRecord(get(configMap.body, "data"), "stepwise-config data");

/** Value of a key of a Secret (stringData or base64 data). */
function secretValue(name: string, key: string): string | undefined {
  const secret = one("Secret", name);
  const plain = get(secret.body, `stringData.${key}`);
  if (typeof plain === "string") return plain;
  const b64 = get(secret.body, `data.${key}`);
  return typeof b64 === "string" ? Buffer.from(b64, "base64").toString("utf8") : undefined;
}

// ---------------------------------------------------------------------------

describe("deploy/ files parse", () => {
  const files = yamlFilesUnder(deployDir);

  it("has the expected files", () => {
    for (const f of [
      "Dockerfile",
      "Dockerfile.dockerignore",
      "compose.yaml",
      "README.md",
      "nats/nats-cluster.conf",
      "k8s/kustomization.yaml",
    ]) {
      expect(existsSync(join(deployDir, f)), f).toBe(true);
    }
    expect(files.length).toBeGreaterThanOrEqual(11);
  });

  it("every YAML file parses without errors or warnings", () => {
    for (const file of files) {
      const docs = Array.from(parseAllDocuments(read(file)));
      expect(docs.length, `${file} has documents`).toBeGreaterThan(0);
      for (const doc of docs) {
        expect(doc.errors.map((e) => e.message), file).toEqual([]);
        expect(doc.warnings.map((e) => e.message), file).toEqual([]);
        expect(isObj(doc.toJS()), `${file}: each document is a mapping`).toBe(true);
      }
    }
  });

  it("the NATS cluster config parses", () => {
    const conf = parseNatsConf(read(join(deployDir, "nats/nats-cluster.conf")));
    expect(conf.port).toBe(4222);
  });
});

describe("compose.yaml", () => {
  const compose = obj(parse(read(join(deployDir, "compose.yaml"))), "compose");
  const services = obj(compose.services, "services");
  const service = (name: string): Obj => obj(services[name], `service ${name}`);
  const env = (name: string): Record<string, string> => envRecord(service(name).environment);
  const command = (name: string): string[] => {
    const c = service(name).command;
    return typeof c === "string" ? c.trim().split(/\s+/) : arr(c, `${name} command`).map((x) => String(x));
  };
  const appServices = ["migrate", ...SERVICES];

  it("has exactly postgres, nats, migrate, ingest, scheduler and executor", () => {
    expect(Object.keys(services).sort()).toEqual(
      ["postgres", "nats", "migrate", "ingest", "scheduler", "executor"].sort(),
    );
  });

  it("builds every app service from deploy/Dockerfile with the repo root as context", () => {
    const images = new Set<string>();
    for (const name of appServices) {
      const build = obj(service(name).build, `${name} build`);
      const context = resolve(deployDir, str(build.context, `${name} build.context`));
      expect(context, `${name} context`).toBe(resolve(root));
      const dockerfile = resolve(context, str(build.dockerfile, `${name} build.dockerfile`));
      expect(dockerfile, `${name} dockerfile`).toBe(join(deployDir, "Dockerfile"));
      images.add(str(service(name).image, `${name} image`));
    }
    expect(images.size, "one image for all app services").toBe(1);
  });

  it("runs `start <service>` and `migrate`", () => {
    for (const name of SERVICES) expect(command(name), name).toEqual(["start", name]);
    expect(command("migrate")).toEqual(["migrate"]);
  });

  it("gives the app services DATABASE_URL and NATS_URL that point at the compose services", () => {
    const pg = envRecord(service("postgres").environment);
    for (const name of appServices) {
      const e = env(name);
      const db = new URL(str(e.DATABASE_URL, `${name} DATABASE_URL`));
      expect(db.protocol, name).toMatch(/^postgres(ql)?:$/);
      expect(db.hostname, name).toBe("postgres");
      expect(db.port === "" ? 5432 : Number(db.port), name).toBe(5432);
      expect(decodeURIComponent(db.username), name).toBe(pg.POSTGRES_USER);
      expect(decodeURIComponent(db.password), name).toBe(pg.POSTGRES_PASSWORD);
      expect(db.pathname, name).toBe(`/${pg.POSTGRES_DB ?? pg.POSTGRES_USER}`);
      const nats = new URL(str(e.NATS_URL, `${name} NATS_URL`));
      expect(nats.protocol, name).toBe("nats:");
      expect(nats.hostname, name).toBe("nats");
      expect(nats.port === "" ? 4222 : Number(nats.port), name).toBe(4222);
      for (const key of Object.keys(e)) {
        expect(configSource, `${name}: ${key} is a setting the services read`).toContain(`${key}:`);
      }
    }
  });

  it("orders startup with depends_on conditions", () => {
    const dependsOn = (name: string): Record<string, string> => {
      const out: Record<string, string> = {};
      for (const [dep, v] of Object.entries(obj(service(name).depends_on, `${name} depends_on`))) {
        out[dep] = str(get(v, "condition"), `${name} depends_on ${dep}`);
      }
      return out;
    };
    for (const name of SERVICES) {
      expect(dependsOn(name), name).toEqual({
        postgres: "service_healthy",
        nats: "service_healthy",
        migrate: "service_completed_successfully",
      });
    }
    expect(dependsOn("migrate")).toEqual({ postgres: "service_healthy" });
    // Waiting for service_healthy needs a healthcheck on the other side.
    for (const name of Object.keys(services)) {
      if (!isObj(service(name).depends_on)) continue;
      for (const [dep, cond] of Object.entries(dependsOn(name))) {
        expect(Object.keys(services), `${name} depends on ${dep}`).toContain(dep);
        if (cond === "service_healthy") expect(service(dep).healthcheck, `${dep} healthcheck`).toBeDefined();
      }
    }
    expect(service("migrate").restart ?? "no", "migrate is one-shot").toBe("no");
  });

  it("publishes 8288 for ingest and 8289 for executor, matching their port settings; the scheduler's 8290 stays inside", () => {
    const published = (name: string): number[] =>
      ((service(name).ports as unknown[] | undefined) ?? []).map((p) => {
        if (isObj(p)) return num(p.target, `${name} port target`);
        const parts = String(p).split(":");
        return Number(parts[parts.length - 1]?.split("/")[0]);
      });
    expect(published("ingest")).toContain(8288);
    expect(published("executor")).toContain(8289);
    expect(published("scheduler")).toEqual([]);
    expect(Number(env("ingest").INGEST_PORT ?? 8288)).toBe(8288);
    expect(Number(env("executor").EXECUTOR_PORT ?? 8289)).toBe(8289);
    expect(Number(env("scheduler").SCHEDULER_PORT ?? 8290)).toBe(8290);
    for (const [name, port] of [["ingest", 8288], ["executor", 8289], ["scheduler", 8290]] as const) {
      const test = arr(get(service(name), "healthcheck.test"), `${name} healthcheck`).join(" ");
      expect(test, `${name} healthcheck`).toContain(`:${port}/healthz`);
    }
    expect(service("executor").stop_grace_period, "executor drains on SIGTERM").toBe("60s");
  });

  it("runs Postgres 16 with pg_isready and a volume", () => {
    const pg = service("postgres");
    expect(str(pg.image, "postgres image")).toMatch(/^postgres:16(\b|$)/);
    expect(arr(get(pg, "healthcheck.test"), "postgres healthcheck").join(" ")).toContain("pg_isready");
    const volumes = arr(pg.volumes, "postgres volumes").map((v) => str(v, "volume"));
    const data = volumes.find((v) => v.endsWith(":/var/lib/postgresql/data"));
    expect(data, "postgres data volume").toBeDefined();
    expect(Object.keys(obj(compose.volumes, "volumes"))).toContain(data?.split(":")[0]);
  });

  it("runs NATS 2.10 with JetStream on a file store volume and a JetStream healthcheck", () => {
    const nats = service("nats");
    expect(str(nats.image, "nats image")).toMatch(/^nats:2\.10(\b|$|-)/);
    const cmd = command("nats");
    expect(cmd).toContain("-js");
    const storeDir = cmd[cmd.indexOf("-sd") + 1];
    expect(cmd.indexOf("-sd")).toBeGreaterThanOrEqual(0);
    expect(cmd[cmd.indexOf("-m") + 1]).toBe("8222");
    const volumes = arr(nats.volumes, "nats volumes").map((v) => str(v, "volume"));
    const data = volumes.find((v) => v.endsWith(`:${storeDir}`));
    expect(data, "JetStream store dir is a volume").toBeDefined();
    expect(Object.keys(obj(compose.volumes, "volumes"))).toContain(data?.split(":")[0]);
    const hc = arr(get(nats, "healthcheck.test"), "nats healthcheck").join(" ");
    expect(hc).toContain(":8222/healthz?js-enabled-only=true");
  });
});

describe("k8s manifests", () => {
  it("every document has apiVersion, kind, metadata.name and the stepwise namespace", () => {
    expect(k8s.length).toBeGreaterThan(0);
    for (const d of k8s) {
      expect(d.apiVersion, d.file).toMatch(/^([a-z.]+\/)?v\d+(beta\d+)?$/);
      expect(d.name, d.file).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
      if (d.kind === "Namespace") expect(d.namespace, `${d.file} Namespace`).toBeUndefined();
      else expect(d.namespace, `${d.file} ${d.kind} ${d.name}`).toBe(NAMESPACE);
    }
    expect(one("Namespace", NAMESPACE).file).toBe("namespace.yaml");
    const keys = k8s.map((d) => `${d.kind}/${d.name}`);
    expect(new Set(keys).size, "no duplicate objects").toBe(keys.length);
  });

  it("kustomization lists exactly the manifests in deploy/k8s", () => {
    const kust = obj(parse(read(join(k8sDir, "kustomization.yaml"))), "kustomization");
    expect(kust.kind).toBe("Kustomization");
    expect(kust.namespace).toBe(NAMESPACE);
    const resources = arr(kust.resources, "resources").map((r) => str(r, "resource"));
    const present = readdirSync(k8sDir).filter((f) => /\.ya?ml$/.test(f) && f !== "kustomization.yaml");
    expect([...resources].sort()).toEqual(present.sort());
    expect(new Set(resources).size).toBe(resources.length);
    for (const f of [
      "namespace.yaml",
      "configmap.yaml",
      "secret.yaml",
      "postgres.yaml",
      "nats.yaml",
      "migrate-job.yaml",
      "ingest.yaml",
      "scheduler.yaml",
      "executor.yaml",
    ]) {
      expect(resources).toContain(f);
    }
    // The image every Stepwise container uses is the one kustomize rewrites.
    const images = arr(kust.images ?? [], "images").map((i) => str(get(i, "name"), "images[].name"));
    const stepwiseImages = new Set([
      ...SERVICES.map((s) => onlyContainer(one("Deployment", `stepwise-${s}`)).image),
      onlyContainer(one("Job", "stepwise-migrate")).image,
    ]);
    expect(stepwiseImages.size, "one image for all").toBe(1);
    const image = str([...stepwiseImages][0], "image");
    expect(images).toContain(image.replace(/[:@].*$/, ""));
  });

  it("the ConfigMap holds the non-secret settings and the Secret holds DATABASE_URL", () => {
    for (const key of ["NATS_URL", "STEPWISE_PREFIX", "INGEST_PORT", "EXECUTOR_PORT", "SCHEDULER_PORT", "LOG_LEVEL"]) {
      expect(Object.keys(configData), key).toContain(key);
    }
    expect(configData, "no credentials in the ConfigMap").not.toHaveProperty("DATABASE_URL");
    for (const key of Object.keys(configData)) {
      expect(configSource, `${key} is a setting the services read`).toContain(`${key}:`);
    }
    expect(Number(configData.INGEST_PORT)).toBe(8288);
    expect(Number(configData.EXECUTOR_PORT)).toBe(8289);
    expect(Number(configData.SCHEDULER_PORT)).toBe(8290);
    expect(configData.STEPWISE_PREFIX).toMatch(/^[a-z][a-z0-9_-]*$/);
    const db = new URL(str(secretValue("stepwise", "DATABASE_URL"), "DATABASE_URL"));
    expect(db.protocol).toMatch(/^postgres(ql)?:$/);
  });

  for (const svc of SERVICES) {
    describe(`Deployment stepwise-${svc}`, () => {
      const dep = (): K8sDoc => one("Deployment", `stepwise-${svc}`);

      it("runs `start <service>` with the settings", () => {
        const c = onlyContainer(dep());
        expect(c.name).toBe(svc);
        expect(c.args).toEqual(["start", svc]);
        expect(c.command, "the image ENTRYPOINT is the CLI").toBeUndefined();
        const envFrom = arr(c.envFrom, `${svc} envFrom`);
        expect(envFrom.map((e) => get(e, "configMapRef.name"))).toContain("stepwise-config");
        const env = arr(c.env, `${svc} env`);
        const dbRef = env.find((e) => get(e, "name") === "DATABASE_URL");
        const secretName = str(get(dbRef, "valueFrom.secretKeyRef.name"), `${svc} DATABASE_URL secret`);
        const secretKey = str(get(dbRef, "valueFrom.secretKeyRef.key"), `${svc} DATABASE_URL key`);
        expect(secretValue(secretName, secretKey), "referenced Secret key exists").toBeDefined();
      });

      it("selects its own pods and sets requests and limits", () => {
        const d = dep();
        const selector = strRecord(get(d.body, "spec.selector.matchLabels"), "matchLabels");
        expect(Object.keys(selector).length).toBeGreaterThan(0);
        expect(isSubset(selector, podLabels(d))).toBe(true);
        expect(selected(d.namespace, selector), "selector picks only this Deployment").toEqual([d]);
        const c = onlyContainer(d);
        for (const kind of ["requests", "limits"]) {
          for (const res of ["cpu", "memory"]) {
            expect(get(c, `resources.${kind}.${res}`), `${svc} ${kind}.${res}`).toBeDefined();
          }
        }
        expect(get(podSpec(d), "securityContext.runAsNonRoot")).toBe(true);
        expect(num(get(podSpec(d), "securityContext.runAsUser"), "runAsUser")).toBeGreaterThan(0);
      });

      const port = PORTS[svc];
      it(`probes GET /healthz on port ${port}`, () => {
        const c = onlyContainer(dep());
        expect(containerPorts(c)).toContain(port);
        expect(Number(configData[PORT_SETTINGS[svc]])).toBe(port);
        for (const probe of ["readinessProbe", "livenessProbe"]) {
          expect(get(c, `${probe}.httpGet.path`), `${svc} ${probe}`).toBe("/healthz");
          expect(resolvePort(c, get(c, `${probe}.httpGet.port`)), `${svc} ${probe} port`).toBe(port);
        }
      });

      it(`has its pods scraped for GET /metrics on port ${port}`, () => {
        const annotations = strRecord(get(dep().body, "spec.template.metadata.annotations"), `${svc} pod annotations`);
        expect(annotations["prometheus.io/scrape"]).toBe("true");
        expect(annotations["prometheus.io/path"]).toBe("/metrics");
        expect(Number(annotations["prometheus.io/port"])).toBe(port);
        expect(containerPorts(onlyContainer(dep()))).toContain(port);
      });

      if (svc === "scheduler") {
        it("has no Service: nothing calls it", () => {
          expect(ofKind("Service").filter((s) => s.name === "stepwise-scheduler")).toEqual([]);
        });
      } else {

        it(`has a Service on port ${port} that reaches the pods`, () => {
          const s = one("Service", `stepwise-${svc}`);
          const selector = strRecord(get(s.body, "spec.selector"), "selector");
          expect(selected(s.namespace, selector).map((w) => w.name)).toEqual([`stepwise-${svc}`]);
          const p = arr(get(s.body, "spec.ports"), "ports").find((x) => get(x, "port") === port);
          expect(p, `${svc} Service port ${port}`).toBeDefined();
          expect(resolvePort(onlyContainer(dep()), get(p, "targetPort") ?? port)).toBe(port);
        });
      }

      if (svc === "executor") {
        it("gives the drain 60 seconds", () => {
          expect(podSpec(dep()).terminationGracePeriodSeconds).toBe(60);
        });
      }
    });
  }

  it("the migrate Job runs `migrate` with the same image and settings", () => {
    const job = one("Job", "stepwise-migrate");
    const c = onlyContainer(job);
    expect(c.args).toEqual(["migrate"]);
    expect(["OnFailure", "Never"]).toContain(podSpec(job).restartPolicy);
    expect(c.image).toBe(onlyContainer(one("Deployment", "stepwise-ingest")).image);
    const env = arr(c.env, "migrate env");
    expect(env.map((e) => get(e, "name"))).toContain("DATABASE_URL");
  });

  it("every Service and PodDisruptionBudget selects a workload and its ports exist", () => {
    for (const s of ofKind("Service")) {
      const selector = strRecord(get(s.body, "spec.selector"), `${s.name} selector`);
      const targets = selected(s.namespace, selector);
      expect(targets.length, `Service ${s.name} selects a workload`).toBeGreaterThan(0);
      for (const p of arr(get(s.body, "spec.ports"), `${s.name} ports`)) {
        const target = get(p, "targetPort") ?? get(p, "port");
        for (const w of targets) {
          const resolved = containers(w).map((c) => resolvePort(c, target)).filter((x) => x !== undefined);
          expect(resolved.length, `Service ${s.name} port ${String(target)} on ${w.name}`).toBe(1);
          expect(containers(w).flatMap(containerPorts)).toContain(resolved[0]);
        }
      }
    }
    for (const pdb of ofKind("PodDisruptionBudget")) {
      const selector = strRecord(get(pdb.body, "spec.selector.matchLabels"), `${pdb.name} selector`);
      expect(selected(pdb.namespace, selector).length, `PDB ${pdb.name}`).toBe(1);
    }
  });

  it("runs Postgres 16 as a StatefulSet with storage, reachable as DATABASE_URL says", () => {
    const sts = one("StatefulSet", "postgres");
    const c = onlyContainer(sts);
    expect(str(c.image, "postgres image")).toMatch(/^postgres:16(\b|$)/);
    const claims = arr(get(sts.body, "spec.volumeClaimTemplates"), "volumeClaimTemplates");
    const claimNames = claims.map((t) => get(t, "metadata.name"));
    const mounts = arr(c.volumeMounts, "postgres mounts");
    expect(mounts.some((m) => claimNames.includes(get(m, "name")))).toBe(true);
    one("Service", str(get(sts.body, "spec.serviceName"), "serviceName"));

    const db = new URL(str(secretValue("stepwise", "DATABASE_URL"), "DATABASE_URL"));
    const svc = serviceForHost(db.hostname);
    const selector = strRecord(get(svc.body, "spec.selector"), "postgres selector");
    expect(selected(svc.namespace, selector)).toEqual([sts]);
    expect(servicePorts(svc)).toContain(db.port === "" ? 5432 : Number(db.port));
    // The example credentials agree with what initialises the database.
    for (const e of arr(c.env, "postgres env")) {
      const name = get(e, "name");
      const ref = get(e, "valueFrom.secretKeyRef");
      if (!isObj(ref)) continue;
      const value = secretValue(str(ref.name, "secret"), str(ref.key, "key"));
      if (name === "POSTGRES_USER") expect(decodeURIComponent(db.username)).toBe(value);
      if (name === "POSTGRES_PASSWORD") expect(decodeURIComponent(db.password)).toBe(value);
      if (name === "POSTGRES_DB") expect(db.pathname).toBe(`/${value ?? ""}`);
    }
  });

  describe("NATS", () => {
    const sts = (): K8sDoc => one("StatefulSet", "nats");
    const embedded = (): ConfMap => {
      const cm = one("ConfigMap", "nats-config");
      const data = strRecord(get(cm.body, "data"), "nats-config data");
      const texts = Object.values(data);
      expect(texts).toHaveLength(1);
      return parseNatsConf(texts[0] ?? "");
    };
    const standalone = (): ConfMap => parseNatsConf(read(join(deployDir, "nats/nats-cluster.conf")));

    it("the ConfigMap enables JetStream on file storage and clustering", () => {
      const conf = embedded();
      const js = confMap(conf.jetstream, "jetstream");
      expect(typeof js.store_dir).toBe("string");
      const cluster = confMap(conf.cluster, "cluster");
      expect(typeof cluster.name).toBe("string");
      expect(typeof cluster.port).toBe("number");
      expect(cluster.routes).toHaveLength(3);
      expect(conf.server_name, "a unique server_name per node").toBe("$POD_NAME");
    });

    it("the ConfigMap agrees with deploy/nats/nats-cluster.conf", () => {
      const a = embedded();
      const b = standalone();
      expect(a.port).toBe(b.port);
      expect(a.http_port ?? a.http).toBe(b.http_port ?? b.http);
      expect(a.server_name).toBe(b.server_name);
      expect(confMap(a.jetstream, "jetstream")).toEqual(confMap(b.jetstream, "jetstream"));
      const ca = confMap(a.cluster, "cluster");
      const cb = confMap(b.cluster, "cluster");
      expect(ca.port).toBe(cb.port);
      expect(ca.name).toBe(cb.name);
      expect(ca.routes).toEqual(cb.routes);
    });

    it("is a 3-node StatefulSet whose routes are its pods behind the headless Service", () => {
      const s = sts();
      const replicas = num(get(s.body, "spec.replicas"), "replicas");
      expect(replicas).toBe(3);
      // The streams are replicated on every node (STEPWISE_NATS_REPLICAS in the services' ConfigMap).
      expect(Number(configData.STEPWISE_NATS_REPLICAS)).toBe(replicas);
      const headless = one("Service", str(get(s.body, "spec.serviceName"), "serviceName"));
      expect(get(headless.body, "spec.clusterIP")).toBe("None");
      expect(selected(headless.namespace, strRecord(get(headless.body, "spec.selector"), "sel"))).toEqual([s]);

      const conf = embedded();
      const cluster = confMap(conf.cluster, "cluster");
      const clusterPort = cluster.port;
      const routes = arr(cluster.routes, "routes").map((r) => new URL(str(r, "route")));
      expect(routes.map((r) => r.hostname)).toEqual(
        Array.from({ length: replicas }, (_, n) => `${s.name}-${n}.${headless.name}.${NAMESPACE}.svc.cluster.local`),
      );
      for (const r of routes) {
        expect(r.protocol).toBe("nats:");
        expect(Number(r.port)).toBe(clusterPort);
      }

      const c = onlyContainer(s);
      expect(str(c.image, "nats image")).toMatch(/^nats:2\.10(\b|$|-)/);
      const ports = containerPorts(c);
      for (const p of [conf.port, clusterPort, conf.http_port]) expect(ports).toContain(p);

      // server_name: $POD_NAME is filled from the pod name.
      const podName = arr(c.env, "nats env").find((e) => get(e, "name") === "POD_NAME");
      expect(get(podName, "valueFrom.fieldRef.fieldPath")).toBe("metadata.name");

      // The config file is the ConfigMap, mounted where the command reads it.
      const volumes = arr(podSpec(s).volumes, "nats volumes");
      const cfgVolume = volumes.find((v) => get(v, "configMap.name") === "nats-config");
      const cfgMount = arr(c.volumeMounts, "nats mounts").find((m) => get(m, "name") === get(cfgVolume, "name"));
      const mountPath = str(get(cfgMount, "mountPath"), "config mountPath");
      const key = Object.keys(strRecord(get(one("ConfigMap", "nats-config").body, "data"), "data"))[0];
      const argv = [...((c.command as unknown[] | undefined) ?? []), ...((c.args as unknown[] | undefined) ?? [])];
      expect(argv).toContain(`${mountPath}/${key ?? ""}`);

      // JetStream's store_dir is on the volume claim.
      const storeDir = confMap(conf.jetstream, "jetstream").store_dir;
      const claims = arr(get(s.body, "spec.volumeClaimTemplates"), "claims").map((t) => get(t, "metadata.name"));
      const dataMount = arr(c.volumeMounts, "nats mounts").find((m) => get(m, "mountPath") === storeDir);
      expect(claims).toContain(get(dataMount, "name"));

      // Readiness waits for JetStream.
      const ready = get(c, "readinessProbe.httpGet");
      expect(get(ready, "path")).toBe("/healthz?js-enabled-only=true");
      expect(resolvePort(c, get(ready, "port"))).toBe(conf.http_port);
    });

    it("NATS_URL points at the client Service of the cluster", () => {
      const url = new URL(str(configData.NATS_URL, "NATS_URL"));
      expect(url.protocol).toBe("nats:");
      const svc = serviceForHost(url.hostname);
      expect(get(svc.body, "spec.clusterIP")).not.toBe("None");
      expect(selected(svc.namespace, strRecord(get(svc.body, "spec.selector"), "sel"))).toEqual([sts()]);
      expect(servicePorts(svc)).toContain(Number(url.port || 4222));
      expect(Number(url.port || 4222)).toBe(embedded().port);
    });
  });
});

describe("Dockerfile", () => {
  interface Instruction {
    op: string;
    args: string;
  }
  interface Stage {
    image: string;
    name: string | undefined;
    instructions: Instruction[];
  }
  const dockerfileText = read(join(deployDir, "Dockerfile"));
  const instructions: Instruction[] = dockerfileText
    .replace(/\\\r?\n/g, " ")
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => {
      const m = /^(\S+)\s*(.*)$/.exec(l);
      return { op: (m?.[1] ?? "").toUpperCase(), args: m?.[2] ?? "" };
    });
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.op === "FROM") {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      stages.push({ image: m?.[1] ?? "", name: m?.[2], instructions: [] });
    } else {
      expect(stages.length, `${ins.op} before FROM`).toBeGreaterThan(0);
      stages[stages.length - 1]?.instructions.push(ins);
    }
  }
  const final = stages[stages.length - 1] as Stage;
  const runs = (s: Stage): string[] => s.instructions.filter((i) => i.op === "RUN").map((i) => i.args);
  const stageByName = (name: string): Stage | undefined => stages.find((s) => s.name === name);
  /** The instructions a stage inherits from its base stages, then its own. */
  const lineage = (s: Stage): Instruction[] => {
    const base = stageByName(s.image);
    return base && base !== s ? [...lineage(base), ...s.instructions] : s.instructions;
  };
  const copies = (list: Instruction[]): { from: string | undefined; src: string[]; dest: string }[] =>
    list
      .filter((i) => i.op === "COPY")
      .map((i) => {
        const words = i.args.split(/\s+/);
        const flags = words.filter((w) => w.startsWith("--"));
        const paths = words.filter((w) => !w.startsWith("--"));
        const from = flags.find((f) => f.startsWith("--from="))?.slice("--from=".length);
        return { from, src: paths.slice(0, -1), dest: paths[paths.length - 1] ?? "" };
      });
  const workdir = (s: Stage): string => {
    const w = lineage(s).filter((i) => i.op === "WORKDIR");
    return w[w.length - 1]?.args ?? "/";
  };

  it("is multi-stage on node:20 with named stages", () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    // Every stage starts from node:20 or from an earlier stage.
    for (const s of stages) if (!stageByName(s.image)) expect(s.image).toMatch(/^node:20([-.]|$)/);
    expect(stages.some((s) => s.image === "node:20-bookworm-slim")).toBe(true);
    expect(final.image).toMatch(/^node:20/);
  });

  it("installs and builds the workspace, then packs it", () => {
    const build = stages.find((s) => runs(s).some((r) => /\bnpm run build\b/.test(r)));
    expect(build, "a stage runs npm run build").toBeDefined();
    const buildLineage = lineage(build as Stage).filter((i) => i.op === "RUN").map((i) => i.args);
    expect(buildLineage.some((r) => /\bnpm ci\b/.test(r) && !/--omit=dev/.test(r)), "full npm ci before build").toBe(
      true,
    );
    expect(runs(build as Stage).some((r) => /\bnpm run build\b.*\bnpm pack\b.*--pack-destination \/packages/.test(r)), "build packs").toBe(true);
    expect(runs(final).some((r) => /\bnpm run build\b/.test(r)), "runtime does not build").toBe(false);
    expect(runs(final).some((r) => /\bnpm ci\b/.test(r)), "runtime has no workspace to npm ci").toBe(false);
    expect(rootPkg.scripts).toHaveProperty("build");
  });

  it("copies the lockfile and every workspace package.json before each npm ci", () => {
    for (const s of stages) {
      const list = s.instructions;
      const ciAt = list.findIndex((i) => i.op === "RUN" && /\bnpm ci\b/.test(i.args));
      if (ciAt < 0) continue;
      const before = copies(list.slice(0, ciAt)).filter((c) => c.from === undefined);
      const sources = before.flatMap((c) => c.src);
      expect(sources, `${s.name ?? s.image}: only manifests before npm ci`).not.toContain(".");
      expect(sources).toContain("package.json");
      expect(sources).toContain("package-lock.json");
      const manifests = sources.filter((p) => p.endsWith("/package.json")).map((p) => p.replace(/\/package\.json$/, ""));
      expect([...manifests].sort(), `${s.name ?? s.image} workspace manifests`).toEqual([...workspaces].sort());
      for (const p of sources) expect(existsSync(join(root, p)), `${p} exists`).toBe(true);
    }
  });

  it("the runtime stage installs the packed packages of everything the CLI needs, and nothing else of the repo", () => {
    const pkgOf = (dir: string): Obj => obj(JSON.parse(read(join(root, dir, "package.json"))), `${dir}/package.json`);
    const dirByName = new Map(workspaces.map((w) => [str(pkgOf(w).name, `${w} name`), w]));
    // Workspaces the CLI depends on, transitively.
    const needed = new Set<string>();
    const visit = (dir: string): void => {
      if (needed.has(dir)) return;
      needed.add(dir);
      for (const dep of Object.keys(obj(pkgOf(dir).dependencies ?? {}, `${dir} dependencies`))) {
        const d = dirByName.get(dep);
        if (d !== undefined) visit(d);
      }
    };
    visit("services/cli");
    expect(needed.size).toBeGreaterThanOrEqual(6);

    const build = stages.find((s) => runs(s).some((r) => /\bnpm pack\b/.test(r))) as Stage;
    const packRun = runs(build).find((r) => /\bnpm pack\b/.test(r)) ?? "";
    const packed = [...packRun.matchAll(/--workspace\s+(\S+)/g)].map((m) => m[1]);
    expect([...packed].sort(), "npm pack of every workspace the CLI needs").toEqual([...needed].sort());
    for (const dir of packed) expect(obj(pkgOf(dir ?? ""), dir ?? "").private, `${dir} is publishable`).toBeUndefined();

    const from = copies(final.instructions).filter((c) => c.from !== undefined);
    expect(from.map((c) => [c.from, c.src.join(" ")])).toEqual([[build.name, "/packages"]]);
    expect(copies(final.instructions).filter((c) => c.from === undefined), "nothing copied from the context").toEqual([]);
    expect(runs(final).some((r) => /\bnpm install\b.*--omit=dev.*\/packages\/\*\.tgz/.test(r)), "runtime installs the tarballs").toBe(true);
  });

  it("runs as node with the CLI as entrypoint", () => {
    const users = final.instructions.filter((i) => i.op === "USER").map((i) => i.args);
    expect(users[users.length - 1]).toBe("node");
    const entry = final.instructions.filter((i) => i.op === "ENTRYPOINT");
    expect(entry).toHaveLength(1);
    const argv: unknown = JSON.parse(entry[0]?.args ?? "null");
    expect(argv).toEqual(["node", "node_modules/@stepwise/cli/dist/main.js"]);
    expect(workdir(final)).toBe("/app");
    // The entrypoint is the CLI's own bin.
    const cli = obj(JSON.parse(read(join(root, "services/cli/package.json"))), "cli package.json");
    expect(get(cli, "bin.stepwise")).toBe("./dist/main.js");
    const exposed = final.instructions.filter((i) => i.op === "EXPOSE").flatMap((i) => i.args.split(/\s+/));
    expect(exposed).toEqual(expect.arrayContaining(["8288", "8289"]));
  });

  it("has a BuildKit ignore file next to it", () => {
    const patterns = read(join(deployDir, "Dockerfile.dockerignore"))
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"));
    for (const p of ["node_modules", "dist", ".git", "*.tsbuildinfo"]) expect(patterns).toContain(p);
    expect(patterns).toContain("**/node_modules");
  });
});

describe("deploy/README.md", () => {
  const readme = read(join(deployDir, "README.md"));
  it("says how to run with compose and kubectl, and lists the environment", () => {
    expect(readme).toContain("docker compose -f deploy/compose.yaml up --build");
    expect(readme).toContain("kubectl apply -k deploy/k8s");
    for (const v of ["DATABASE_URL", "NATS_URL", "STEPWISE_PREFIX", "INGEST_PORT", "EXECUTOR_PORT", "LOG_LEVEL"]) {
      expect(readme).toMatch(new RegExp(`^\\|\\s*\`${v}\``, "m"));
    }
  });
});
