#!/usr/bin/env node
// Wire-fixture capture for the Rust protocol codec (proto crate tests).
//
//   node capture.mjs [outDir]      (default: ../../../proto/tests/fixtures/js-wire)
//   node capture.mjs --all <dir>   (also dump every frame, for exploration)
//
// Starts a reference automerge-repo server (NodeWSServerAdapter + NodeFSStorageAdapter,
// sharePolicy false, enableRemoteHeadsGossiping true) whose `ws` sockets are wrapped so
// every raw frame is recorded in both directions, then drives real JS clients through:
// a storage-ful join, a storage-less join, doc creation + edits (sync with changes), a
// request for an existing doc (whole-doc sync), a request for an unknown doc
// (sync + doc-unavailable), ephemeral messages, remote-heads gossip
// (remote-subscription-change, remote-heads-changed both ways, the client one via a
// reconnect), a raw join offering only protocol "2" (server `error`), and a client
// shutdown (to see whether a `leave` is ever sent). A selection of frames (<= 3 per
// (from,type)) is written as <NN>-<from>-<type>.cbor plus README.md describing each
// frame's exact CBOR encoding. Regenerate with: node capture.mjs
import { WebSocketServer, WebSocket } from "ws"
import { Repo, cbor, generateAutomergeUrl } from "@automerge/automerge-repo"
import { NodeWSServerAdapter, WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"
import * as A from "@automerge/automerge"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"

const here = path.dirname(fileURLToPath(import.meta.url))
const argv = process.argv.slice(2)
let dumpAll = null
if (argv[0] === "--all") {
  dumpAll = argv[1]
  argv.splice(0, 2)
}
const outDir = path.resolve(argv[0] ?? path.join(here, "../../../proto/tests/fixtures/js-wire"))
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "taskflow-capture-"))
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }))

const TIMEOUT = 15000
const hardStop = setTimeout(() => {
  process.stderr.write("capture.mjs: watchdog: took longer than 90 s\n")
  process.exit(1)
}, 90000)
process.on("unhandledRejection", e => {
  process.stderr.write(`capture.mjs: ${e?.stack ?? e}\n`)
  process.exit(1)
})

const sleep = ms => new Promise(r => setTimeout(r, ms))
async function waitFor(pred, what, ms = TIMEOUT) {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await pred()) return
    await sleep(20)
  }
  throw new Error(`capture.mjs: timed out waiting for ${what}`)
}

// ------------------------------------------------------------------ recording server

const frames = [] // {seq, from, conn, phase, bytes, msg}
let phase = "setup"
const socketsByPeer = {}
let lastFrameAt = Date.now()

function record(from, conn, data, isBinary) {
  const bytes = Buffer.from(data instanceof ArrayBuffer ? new Uint8Array(data) : data)
  let msg
  try {
    msg = cbor.decode(bytes)
  } catch (e) {
    msg = { type: "<undecodable>", error: String(e) }
  }
  frames.push({ seq: frames.length, from, conn, phase, bytes, msg, isBinary })
  lastFrameAt = Date.now()
  return msg
}

const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 })
let connCount = 0
// Registered before the adapter's own "connection" listener, so send() is wrapped first.
wss.on("connection", sock => {
  const conn = ++connCount
  const origSend = sock.send.bind(sock)
  sock.send = (data, ...rest) => {
    record("server", conn, data, true)
    return origSend(data, ...rest)
  }
  sock.on("message", (data, isBinary) => {
    const msg = record("client", conn, data, isBinary)
    if (msg?.type === "join") socketsByPeer[msg.senderId] = sock
  })
})
await new Promise(r => wss.on("listening", r))
const url = `ws://127.0.0.1:${wss.address().port}`

const serverRepo = new Repo({
  network: [new NodeWSServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(path.join(tmp, "server")),
  peerId: "server-1",
  sharePolicy: async () => false,
  enableRemoteHeadsGossiping: true,
})

async function settle(quietMs = 400) {
  // wait until no frame has moved for quietMs (the repo throttles syncs at 100 ms)
  await sleep(150)
  await waitFor(() => Date.now() - lastFrameAt >= quietMs, "the wire to go quiet")
}

function client(peerId, { storage } = {}) {
  return new Repo({
    network: [new WebSocketClientAdapter(url, 300)],
    storage: storage ? new NodeFSStorageAdapter(path.join(tmp, peerId)) : undefined,
    peerId,
    enableRemoteHeadsGossiping: true,
  })
}

// ------------------------------------------------------------------ scenarios

phase = "join-storageful"
const a = client("client-a", { storage: true })
await waitFor(() => a.peers.includes("server-1"), "client-a to join")
const serverStorageId = a.getStorageIdOfPeer("server-1")
const aStorageId = await a.storageId()
await settle()

phase = "join-ephemeral"
const b = client("client-b")
await waitFor(() => b.peers.includes("server-1"), "client-b to join")
await settle()

phase = "create-doc"
const ha = a.create({ name: "fx", tasks: {} })
ha.change(d => {
  d.tasks.t1 = { title: "a" }
})
const docUrl = ha.url
await waitFor(() => {
  const h = ha.getSyncInfo(serverStorageId)?.lastHeads
  return h && h.join() === ha.heads().join()
}, "the server to have client-a's doc")
await settle()

phase = "request-existing"
const hb = await b.find(docUrl)
await settle()

phase = "request-unknown"
const unknownUrl = generateAutomergeUrl()
const unavailable = await b.find(unknownUrl).then(
  () => false,
  e => /unavailable/.test(String(e)),
)
if (!unavailable) throw new Error("expected the unknown doc to be unavailable")
await settle()

phase = "ephemeral"
const bGot = []
const aGot = []
hb.on("ephemeral-message", e => bGot.push(e))
ha.on("ephemeral-message", e => aGot.push(e))
ha.broadcast({ hello: "from a" })
await waitFor(() => bGot.length >= 1, "client-b to get a's ephemeral message")
hb.broadcast({ hello: "from b", n: 1.5 })
await waitFor(() => aGot.length >= 1, "client-a to get b's ephemeral message")
await settle()

phase = "b-first-edit"
// b's first edit after receiving the doc through the whole-doc path: watch its upload size
hb.change(d => {
  d.tasks.t2 = { title: "b" }
})
await waitFor(() => ha.doc()?.tasks?.t2?.title === "b", "client-a to see b's edit")
await settle()

phase = "remote-subscription"
b.subscribeToRemotes([aStorageId])
await waitFor(
  () => frames.some(f => f.phase === phase && f.msg.type === "remote-subscription-change"),
  "client-b's remote-subscription-change",
)
await settle()

phase = "edit-with-gossip"
const remoteHeadsSeenByB = []
hb.on("remote-heads", e => remoteHeadsSeenByB.push(e))
ha.change(d => {
  d.tasks.t1.title = "ab"
})
await waitFor(() => hb.doc()?.tasks?.t1?.title === "ab", "client-b to see a's edit")
await waitFor(
  () => frames.some(f => f.phase === phase && f.from === "server" && f.msg.type === "remote-heads-changed"),
  "the server's remote-heads-changed",
)
await settle()

phase = "reconnect"
// The server drops client-a's socket; the client reconnects (retryInterval 300 ms), re-joins,
// and on the new `peer` re-announces what it knows of the server's heads: remote-heads-changed.
socketsByPeer["client-a"].close()
await waitFor(
  () => frames.some(f => f.phase === phase && f.from === "client" && f.msg.type === "remote-heads-changed"),
  "client-a's remote-heads-changed after reconnecting",
)
await settle()

phase = "version-probe"
const probeFrames = []
await new Promise((resolve, reject) => {
  const ws = new WebSocket(url)
  const t = setTimeout(() => reject(new Error("probe timed out")), TIMEOUT)
  ws.on("open", () => {
    ws.send(
      cbor.encode({
        type: "join",
        senderId: "probe-v2",
        peerMetadata: { isEphemeral: true },
        supportedProtocolVersions: ["2"],
      }),
    )
  })
  ws.on("message", d => probeFrames.push(cbor.decode(d)))
  ws.on("close", (code, reason) => {
    clearTimeout(t)
    probeFrames.closeCode = code
    probeFrames.closeReason = String(reason)
    resolve()
  })
  ws.on("error", reject)
})
await settle()

phase = "shutdown"
await a.shutdown()
await b.shutdown()
await sleep(600)
const leaveFrames = frames.filter(f => f.msg.type === "leave")

// ------------------------------------------------------------------ raw CBOR description

function describeItem(buf, pos) {
  const b = buf[pos]
  const major = b >> 5
  const ai = b & 31
  let p = pos + 1
  let arg
  let head
  if (ai < 24) {
    arg = ai
    head = "1-byte head"
  } else if (ai === 24) {
    arg = buf[p]
    p += 1
    head = "+1"
  } else if (ai === 25) {
    arg = buf.readUInt16BE(p)
    p += 2
    head = "+2"
  } else if (ai === 26) {
    arg = buf.readUInt32BE(p)
    p += 4
    head = "+4"
  } else if (ai === 27) {
    arg = Number(buf.readBigUInt64BE(p))
    p += 8
    head = "+8"
  } else if (ai === 31) {
    arg = null
    head = "indefinite"
  } else throw new Error(`reserved additional info ${ai}`)
  const hb = "0x" + b.toString(16).padStart(2, "0")
  switch (major) {
    case 0:
      return { end: p, d: { kind: "uint", value: arg, enc: `${hb} ${head}` } }
    case 1:
      return { end: p, d: { kind: "negint", value: -1 - arg, enc: `${hb} ${head}` } }
    case 2:
    case 3: {
      if (arg === null) throw new Error("indefinite string not expected")
      const raw = buf.subarray(p, p + arg)
      return {
        end: p + arg,
        d: major === 2 ? { kind: "bytes", len: arg, raw, enc: hb } : { kind: "text", value: raw.toString("utf8"), enc: hb },
      }
    }
    case 4: {
      const items = []
      if (arg === null) {
        while (buf[p] !== 0xff) {
          const r = describeItem(buf, p)
          items.push(r.d)
          p = r.end
        }
        p++
      } else
        for (let i = 0; i < arg; i++) {
          const r = describeItem(buf, p)
          items.push(r.d)
          p = r.end
        }
      return { end: p, d: { kind: "array", items, definite: arg !== null, enc: hb } }
    }
    case 5: {
      const entries = []
      const one = () => {
        const k = describeItem(buf, p)
        p = k.end
        const v = describeItem(buf, p)
        p = v.end
        entries.push([k.d, v.d])
      }
      if (arg === null) {
        while (buf[p] !== 0xff) one()
        p++
      } else for (let i = 0; i < arg; i++) one()
      return { end: p, d: { kind: "map", entries, definite: arg !== null, n: entries.length, enc: hb } }
    }
    case 6: {
      const r = describeItem(buf, p)
      return { end: r.end, d: { kind: "tag", tag: arg, inner: r.d, enc: hb } }
    }
    case 7: {
      if (ai === 20) return { end: p, d: { kind: "false", enc: hb } }
      if (ai === 21) return { end: p, d: { kind: "true", enc: hb } }
      if (ai === 22) return { end: p, d: { kind: "null", enc: hb } }
      if (ai === 23) return { end: p, d: { kind: "undefined", enc: hb } }
      if (ai === 25) return { end: p, d: { kind: "float16", enc: hb } }
      if (ai === 26) return { end: p, d: { kind: "float32", value: buf.readFloatBE(pos + 1), enc: hb } }
      if (ai === 27) return { end: p, d: { kind: "float64", value: buf.readDoubleBE(pos + 1), enc: hb } }
      return { end: p, d: { kind: `simple(${arg})`, enc: hb } }
    }
  }
}

function syncSummary(raw) {
  try {
    const m = A.decodeSyncMessage(raw)
    // automerge chunk header: magic 85 6f 4a 83, 4-byte checksum, chunk type (0 document, 1 change, 2 deflated change)
    const chunkKind = c => ({ 0: "document chunk", 1: "change chunk", 2: "deflated change chunk" })[c[8]] ?? `chunk type ${c[8]}`
    const changeBytes = m.changes.map(c => `${chunkKind(c)} ${c.length} B`)
    return (
      `automerge sync msg, first byte 0x${raw[0].toString(16)}: heads ${m.heads.length}, need ${m.need.length}, ` +
      `have ${m.have.length}, changes ${m.changes.length}` +
      (changeBytes.length ? ` (${changeBytes.join(" + ")})` : "")
    )
  } catch (e) {
    return `not an automerge sync message (${e.message})`
  }
}

const SHOW_TEXT = new Set(["type", "senderId", "targetId", "documentId", "sessionId", "message", "selectedProtocolVersion", "storageId"])
function render(d, key, indent = "") {
  switch (d.kind) {
    case "map": {
      const hdr = d.definite ? `map(${d.n}) definite, header ${d.enc}${d.enc === "0xb9" ? " (map16: 2-byte length even when small)" : ""}` : "map indefinite (0xbf ... 0xff)"
      const lines = d.entries.map(([k, v]) => {
        const kn = k.kind === "text" ? k.value : `<${k.kind} key>`
        return `${indent}  ${kn}: ${render(v, kn, indent + "  ")}`
      })
      return `{  -- ${hdr}\n${lines.join("\n")}\n${indent}}`
    }
    case "array":
      if (d.items.length === 0) return `array(0) ${d.definite ? "definite" : "indefinite"} [${d.enc}]`
      return `array(${d.items.length}) ${d.definite ? "definite" : "indefinite"} [${d.items.map(i => render(i, key, indent + "  ")).join(", ")}]`
    case "text":
      return SHOW_TEXT.has(key) || d.value.length <= 48 ? `text ${JSON.stringify(d.value)}` : `text(${d.value.length})`
    case "bytes": {
      let extra = ""
      if (key === "data") {
        const s = syncSummary(d.raw)
        if (!/^not an/.test(s)) extra = ` -- ${s}`
        else {
          try {
            extra = ` -- cbor-x encoded payload ${JSON.stringify(cbor.decode(d.raw))}`
          } catch {
            extra = ""
          }
        }
      }
      return `bytes(${d.len}) [major type 2, untagged]${extra}`
    }
    case "uint":
    case "negint":
      return `${d.kind} ${d.value} [${d.enc}, ${d.enc.includes("1-byte") ? "inline" : "length " + d.enc.split(" ")[1]}]`
    case "float32":
    case "float64":
      return `${d.kind} ${d.value} [${d.enc}]`
    case "tag":
      return `tag(${d.tag}) ${render(d.inner, key, indent)}`
    default:
      return `${d.kind} [${d.enc}]`
  }
}

function noteEncodings(d, acc = new Set()) {
  if (d.kind === "map") {
    acc.add(d.definite ? `map header ${d.enc}` : "indefinite map")
    for (const [k, v] of d.entries) {
      if (k.kind !== "text") acc.add("non-text key")
      noteEncodings(v, acc)
    }
  } else if (d.kind === "array") {
    acc.add(d.definite ? "definite array" : "indefinite array")
    d.items.forEach(i => noteEncodings(i, acc))
  } else if (d.kind === "tag") {
    acc.add(`tag ${d.tag}`)
    noteEncodings(d.inner, acc)
  } else if (["undefined", "float32", "float64", "float16", "null"].includes(d.kind)) acc.add(d.kind)
  return acc
}

// ------------------------------------------------------------------ selection

const syncKind = f => {
  try {
    const m = A.decodeSyncMessage(f.msg.data)
    if (m.changes.length) return "changes"
    if (m.need.length) return "need"
    return "no-changes"
  } catch {
    return "?"
  }
}
const is = (from, type, ph, extra = () => true) => f => f.from === from && f.msg.type === type && f.phase === ph && extra(f)
const WANT = [
  ["client join, storage-ful repo (peerMetadata has storageId, isEphemeral false)", is("client", "join", "join-storageful")],
  ["server peer answer to the storage-ful join", is("server", "peer", "join-storageful")],
  ["client join, storage-less repo (isEphemeral true; storageId key present but undefined)", is("client", "join", "join-ephemeral")],
  ["client join offering only protocol \"2\" (raw ws probe)", is("client", "join", "version-probe")],
  ["server error answer to the protocol-2 join (the socket is then closed)", is("server", "error", "version-probe")],
  ["client announces a doc it created: sync with heads, no changes (not a request)", is("client", "sync", "create-doc", f => syncKind(f) === "no-changes")],
  ["server asks for the new doc's changes: sync with need", is("server", "sync", "create-doc", f => syncKind(f) === "need")],
  ["client sync carrying the new doc: v2 (0x43) message whose single \"change\" is a whole-document chunk", is("client", "sync", "create-doc", f => syncKind(f) === "changes")],
  ["client sync carrying one incremental change (an edit after the server has the doc)", is("client", "sync", "edit-with-gossip", f => syncKind(f) === "changes")],
  ["client request for an existing doc (fresh find, empty heads)", is("client", "request", "request-existing")],
  ["server sync answering the request with the whole document (one document chunk in `changes`)", is("server", "sync", "request-existing", f => syncKind(f) === "changes")],
  ["client request for an unknown doc", is("client", "request", "request-unknown")],
  ["server sync answering the unknown-doc request, sent before doc-unavailable: no heads, and its one \"change\" is the 14-byte save() of an EMPTY document", is("server", "sync", "request-unknown")],
  ["server doc-unavailable for the unknown doc", is("server", "doc-unavailable", "request-unknown")],
  ["client ephemeral broadcast (DocHandle.broadcast({hello:\"from a\"}))", is("client", "ephemeral", "ephemeral", f => f.msg.senderId === "client-a")],
  ["server relay of a's ephemeral to b: senderId/sessionId/count are the ORIGINAL sender's", is("server", "ephemeral", "ephemeral", f => f.msg.senderId === "client-a")],
  ["client ephemeral from b with a float in the payload ({hello:\"from b\", n:1.5})", is("client", "ephemeral", "ephemeral", f => f.msg.senderId === "client-b")],
  ["server relay of b's ephemeral to a", is("server", "ephemeral", "ephemeral", f => f.msg.senderId === "client-b")],
  ["client b re-forwarding a's relayed ephemeral back to the server (senderId client-a on b's socket; the JS server drops it)", is("client", "ephemeral", "ephemeral", f => f.msg.senderId === "client-a" && f.conn !== frames.find(g => g.msg.senderId === "client-a" && g.msg.type === "join")?.conn)],
  ["client remote-subscription-change (subscribeToRemotes([storageId of client-a]))", is("client", "remote-subscription-change", "remote-subscription")],
  ["server remote-heads-changed telling b the heads client-a's storage has", is("server", "remote-heads-changed", "edit-with-gossip")],
  ["client remote-heads-changed sent after re-joining (re-announces the server's heads it knows)", is("client", "remote-heads-changed", "reconnect")],
]

const chosen = []
for (const [what, pred] of WANT) {
  const f = frames.find(g => pred(g) && !chosen.some(c => c.f === g))
  if (f) chosen.push({ what, f })
  else process.stderr.write(`capture.mjs: warning: no frame for: ${what}\n`)
}
// cap at 3 per (from,type)
const perPair = {}
const final = chosen.filter(({ f }) => {
  const k = `${f.from}-${f.msg.type}`
  perPair[k] = (perPair[k] ?? 0) + 1
  return perPair[k] <= 3
})

// ------------------------------------------------------------------ output

fs.mkdirSync(outDir, { recursive: true })
for (const old of fs.readdirSync(outDir)) if (/^\d\d-.*\.cbor$/.test(old)) fs.unlinkSync(path.join(outDir, old))
const ver = p => JSON.parse(fs.readFileSync(path.join(here, "node_modules", p, "package.json"), "utf8")).version
const versions = [
  "@automerge/automerge",
  "@automerge/automerge-repo",
  "@automerge/automerge-repo-network-websocket",
  "@automerge/automerge-repo-storage-nodefs",
  "cbor-x",
  "ws",
]
  .map(p => `${p} ${ver(p)}`)
  .join(", ")

const entries = final.map(({ what, f }, i) => {
  const name = `${String(i + 1).padStart(2, "0")}-${f.from}-${f.msg.type}.cbor`
  fs.writeFileSync(path.join(outDir, name), f.bytes)
  const d = describeItem(f.bytes, 0)
  if (d.end !== f.bytes.length) throw new Error(`${name}: trailing bytes`)
  return { name, what, f, d: d.d }
})

const pairs = {}
for (const f of frames) {
  const k = `${f.from} ${f.msg.type}`
  pairs[k] = (pairs[k] ?? 0) + 1
}
const allEnc = new Set()
entries.forEach(e => noteEncodings(e.d, allEnc))
// facts over every frame seen, not just the fixtures
const mapHeads = new Set()
const numKinds = {}
const undefKeys = new Set()
let tags = 0
let indefinite = 0
const walk = (d, key) => {
  if (d.kind === "map") {
    if (d.definite) mapHeads.add(d.enc)
    else indefinite++
    for (const [k, v] of d.entries) walk(v, k.kind === "text" ? k.value : "?")
  } else if (d.kind === "array") {
    if (!d.definite) indefinite++
    d.items.forEach(i => walk(i, key))
  } else if (d.kind === "tag") {
    tags++
    walk(d.inner, key)
  } else if (["uint", "negint", "float32", "float64", "float16"].includes(d.kind)) {
    ;(numKinds[key] ??= new Set()).add(d.kind === "uint" || d.kind === "negint" ? `${d.kind} (${d.enc})` : `${d.kind} (${d.enc})`)
  } else if (d.kind === "undefined") undefKeys.add(key)
}
frames.forEach(f => walk(describeItem(f.bytes, 0).d, ""))
const facts = [
  mapHeads.size === 1 && mapHeads.has("0xb9")
    ? "Every map is **definite-length with a map16 header `0xb9 NN NN`**, even for 1-8 keys (cbor-x reserves 2 length bytes and back-patches the count). A decoder must accept non-minimal length heads; an encoder may use minimal ones (cbor-x decodes both)."
    : `Map headers seen: ${[...mapHeads].join(", ")}.`,
  indefinite === 0 ? "No indefinite-length maps, arrays or strings." : `${indefinite} indefinite-length items seen.`,
  tags === 0 ? "No CBOR tags at all (no cbor-x records/structures, byte strings untagged)." : `${tags} tagged items seen.`,
  "`data` is always a plain byte string (major type 2); arrays and strings use minimal headers.",
  `Numbers by key: ${Object.entries(numKinds).map(([k, v]) => `\`${k}\`: ${[...v].join(" / ")}`).join("; ")}. cbor-x writes integers only up to 32 bits; a \`Date.now()\` timestamp (> 2^32) therefore goes out as **float64**, not uint64.`,
  undefKeys.size
    ? `\`undefined\` (simple value \`0xf7\`) is sent as the value of: ${[...undefKeys].map(k => "`" + k + "`").join(", ")} (a JS key whose value is undefined). Treat it as absent.`
    : "No `undefined` values seen.",
  "The peer metadata key is `peerMetadata` (never `metadata`).",
]

let md = `# automerge-repo wire fixtures (captured from the real JS peers)

Generated by \`sync-server/tests/js/capture.mjs\` (\`cd sync-server/tests/js && npm install && node capture.mjs\`);
do not edit by hand. Versions: ${versions}; node ${process.version}.

Each \`NN-<from>-<type>.cbor\` is one raw WebSocket binary frame exactly as it crossed the wire
(from = the side that sent it; type = the message's \`type\` field), recorded by wrapping the \`ws\`
sockets of a stock \`NodeWSServerAdapter\` server (Repo with NodeFS storage, \`sharePolicy\` false,
\`enableRemoteHeadsGossiping: true\`) talking to stock \`WebSocketClientAdapter\` clients
(\`client-a\`: NodeFS storage; \`client-b\`: no storage; both with gossiping on). Peer ids, storage ids
(uuids), document ids (base58check) and automerge hashes differ on every regeneration.

Encoding facts, checked over all ${frames.length} frames of the run (cbor-x \`Encoder({tagUint8Array:false, useRecords:false})\`):
${facts.map(f => "- " + f).join("\n")}
- Key order is JS insertion order and differs per message type (see below); do not depend on it.

## Files

`
for (const e of entries) {
  md += `### ${e.name} (${e.f.bytes.length} bytes)\n${e.what}. Scenario \`${e.f.phase}\`, connection #${e.f.conn}.\n\n\`\`\`\n${render(e.d, "")}\n\`\`\`\n\n`
}

md += `## Observations from the capture run

- Frames sent after \`Repo.shutdown()\` on both clients: ${frames.filter(f => f.phase === "shutdown").length}.
- \`leave\`: ${leaveFrames.length ? `sent ${leaveFrames.length} time(s)` : "**never sent**: `Repo.shutdown()` / `WebSocketClientAdapter.disconnect()` just close the socket (no leave frame); peers learn of departures from the socket close only"}.
- Protocol-2 probe: server answered ${JSON.stringify(probeFrames.map(m => m.type))} then closed the socket (close code ${probeFrames.closeCode}${probeFrames.closeReason ? `, reason ${JSON.stringify(probeFrames.closeReason)}` : ", no reason"}).
- Unknown-doc request: the server answers with a \`sync\` first (no heads; its single "change" is the
  14-byte \`save()\` of an empty document, the whole-doc path applied to nothing), then \`doc-unavailable\`;
  the client's \`find()\` rejects with "Document ... is unavailable".
- Ephemeral relay keeps the original \`senderId\`, \`sessionId\` and \`count\` (only \`targetId\` changes);
  a receiving client re-forwards a relayed ephemeral message to its other peers, i.e. back to the server
  with \`senderId\` = the original sender; the JS server drops it because that senderId is not the peer
  joined on that socket. b received ${bGot.length} and a received ${aGot.length} ephemeral message(s); echoes of a's own
  message back to a: ${aGot.filter(e => e.message?.hello === "from a").length}.
- b's first edit after its whole-doc \`find()\` (phase \`b-first-edit\` in the table below) uploaded:
  ${frames.filter(f => f.phase === "b-first-edit" && f.from === "client" && f.msg.type === "sync").map(f => syncSummary(f.msg.data).replace("automerge sync msg, ", "")).join("; ")}.
- \`remote-heads-changed.newHeads\` is keyed by **storageId** (uuid text), not peerId; its \`heads\` are
  **bs58check-encoded** 32-byte change hashes (~50 chars, automerge-repo \`encodeHeads\`), not hex as in the
  automerge API. Document ids are bs58check of 16 bytes too.
- After a reconnect the client's first \`sync\` is a v1 (0x42) message again (sync state re-initialised);
  a server must accept both 0x42 and 0x43 sync messages on the same document/peer.
- client-b saw ${remoteHeadsSeenByB.length} \`remote-heads\` event(s) for client-a's storage after subscribing.

All frames of the run, by (from, type): ${Object.entries(pairs)
  .map(([k, n]) => `${k} ×${n}`)
  .join(", ")}.

### Full conversation of the run (seq, phase, connection, direction, type, frame bytes, sync content)

| seq | phase | conn | dir | type | bytes | notes |
| --- | --- | --- | --- | --- | --- | --- |
${frames
  .map(f => {
    const notes =
      f.msg.type === "sync" || f.msg.type === "request"
        ? syncSummary(f.msg.data).replace("automerge sync msg, ", "")
        : f.msg.type === "ephemeral"
          ? `sender ${f.msg.senderId} count ${f.msg.count}`
          : ""
    return `| ${f.seq} | ${f.phase} | ${f.conn} | ${f.from === "client" ? "C→S" : "S→C"} | ${f.msg.type} | ${f.bytes.length} | ${notes} |`
  })
  .join("\n")}
`
fs.writeFileSync(path.join(outDir, "README.md"), md)

if (dumpAll) {
  fs.mkdirSync(dumpAll, { recursive: true })
  for (const f of frames) {
    const base = `${String(f.seq).padStart(3, "0")}-${f.phase}-${f.from}-${f.msg.type}`
    fs.writeFileSync(path.join(dumpAll, base + ".cbor"), f.bytes)
    fs.writeFileSync(path.join(dumpAll, base + ".txt"), render(describeItem(f.bytes, 0).d, "") + "\n")
  }
}

process.stdout.write(`wrote ${entries.length} fixtures + README.md to ${outDir} (${frames.length} frames seen)\n`)
clearTimeout(hardStop)
try {
  wss.close()
} catch {
  /* ignore */
}
fs.rmSync(tmp, { recursive: true, force: true })
void serverRepo
process.exit(0)
