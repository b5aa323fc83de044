#!/usr/bin/env node
// Taskflow interop peer: drives real automerge-repo JS clients (Repo +
// WebSocketClientAdapter, storage-less unless stated) against a sync server, so the
// Rust server can be tested with the stock client. Every wait is bounded
// (default 20 s, env PEER_TIMEOUT_MS overrides); results are printed as one JSON line on
// stdout; exit 0 on success, 1 with a message on stderr on failure/timeout, 2 on bad usage.
//
//   node peer.mjs two-clients     <wsUrl>
//   node peer.mjs create-board    <wsUrl> <boardName>
//   node peer.mjs add-task        <wsUrl> <docUrl> <taskId> <title>
//   node peer.mjs wait-task       <wsUrl> <docUrl> <title> [timeoutMs]
//   node peer.mjs show            <wsUrl> <docUrl>
//   node peer.mjs ephemeral-relay <wsUrl> <docUrl>
import { Repo, isValidAutomergeUrl, generateAutomergeUrl } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import * as A from "@automerge/automerge"

const USAGE = `usage:
  node peer.mjs two-clients     <wsUrl>
  node peer.mjs create-board    <wsUrl> <boardName>
  node peer.mjs add-task        <wsUrl> <docUrl> <taskId> <title>
  node peer.mjs wait-task       <wsUrl> <docUrl> <title> [timeoutMs]
  node peer.mjs show            <wsUrl> <docUrl>
  node peer.mjs ephemeral-relay <wsUrl> <docUrl>
env: PEER_TIMEOUT_MS (default 20000) bounds every wait; TASKFLOW_REGISTER registers new
boards with a Taskflow server (see newBoardHandle).`

const TIMEOUT = Number(process.env.PEER_TIMEOUT_MS) > 0 ? Number(process.env.PEER_TIMEOUT_MS) : 20000
const sub = process.argv[2]
const args = process.argv.slice(3)
const repos = []
let exiting = false

// ---------------------------------------------------------------- process helpers

async function finish(code, line, errText) {
  if (exiting) return
  exiting = true
  for (const r of repos) {
    try {
      r.networkSubsystem.adapters.forEach(a => a.disconnect())
    } catch {
      /* already closed */
    }
  }
  // let the close frames leave; the repo's timers would otherwise keep us alive forever
  await sleep(50)
  if (errText) process.stderr.write(`peer.mjs ${sub ?? ""}: error: ${errText}\n`)
  if (line !== undefined) {
    process.stdout.write(JSON.stringify(line) + "\n", () => process.exit(code))
  } else {
    process.exit(code)
  }
}
const ok = line => finish(0, line)
const fail = msg => finish(1, undefined, msg)
const usage = msg => {
  process.stderr.write(`peer.mjs: ${msg}\n${USAGE}\n`)
  process.exit(2)
}

process.on("uncaughtException", e => fail(`uncaught exception: ${e?.stack ?? e}`))
process.on("unhandledRejection", e => fail(`unhandled rejection: ${e?.stack ?? e}`))

class Timeout extends Error {}

function sleep(ms) {
  return new Promise(r => setTimeout(r, ms))
}

function withTimeout(promise, ms, what) {
  let t
  return Promise.race([
    promise,
    new Promise((_, rej) => {
      t = setTimeout(() => rej(new Timeout(`timed out after ${ms} ms waiting for ${what}`)), ms)
    }),
  ]).finally(() => clearTimeout(t))
}

const deadlineFrom = ms => Date.now() + ms
const left = deadline => Math.max(1, deadline - Date.now())

// ---------------------------------------------------------------- board schema

const COLUMNS = [
  { id: "todo", name: "To do", wipLimit: null },
  { id: "doing", name: "In progress", wipLimit: null },
  { id: "done", name: "Done", wipLimit: null },
]

function newBoard(name) {
  return { schemaVersion: 1, name, columns: COLUMNS.map(c => ({ ...c })), tasks: {} }
}

function newTask(id, title, { createdBy = "user-cli", order = "8", column = "todo" } = {}) {
  const now = new Date()
  return {
    id,
    title,
    description: "",
    column,
    order,
    assignees: { [createdBy]: true },
    labels: {},
    priority: "none",
    due: null,
    createdBy,
    createdAt: now,
    updatedAt: now,
    archived: false,
    comments: {},
  }
}

// An order key that sorts after every existing task's order. Keys are base-16 fractions in
// lowercase hex that never end in "0" (see proto's board::order): appending "8" to the largest
// key gives a key just above it.
function orderAfterAll(doc) {
  const orders = Object.values(doc.tasks ?? {}).map(t => String(t.order ?? ""))
  if (orders.length === 0) return "8"
  const max = orders.reduce((a, b) => (a > b ? a : b))
  return max + "8"
}

const taskTitles = doc => Object.values(doc?.tasks ?? {}).map(t => String(t.title))
const toJSON = doc => JSON.parse(JSON.stringify(A.toJS(doc)))

// A Taskflow server only syncs documents that are some project's board. With
// TASKFLOW_REGISTER={"base":"http://host:port","token":"<access token>","workspaceId":"…"}
// new boards get their id here and are registered with POST /api/v1/projects before they
// sync (as Taskflow's own clients do); without it they are plain repo.create() documents.
const REGISTER = process.env.TASKFLOW_REGISTER ? JSON.parse(process.env.TASKFLOW_REGISTER) : null

async function newBoardHandle(repo, name) {
  if (!REGISTER) return repo.create(newBoard(name))
  const documentId = generateAutomergeUrl().slice("automerge:".length)
  const res = await fetch(`${REGISTER.base}/api/v1/projects`, {
    method: "POST",
    headers: { authorization: `Bearer ${REGISTER.token}`, "content-type": "application/json" },
    body: JSON.stringify({ workspaceId: REGISTER.workspaceId, name, documentId }),
  })
  if (!res.ok) throw new Error(`registering board ${name}: ${res.status} ${await res.text()}`)
  const handle = repo.import(A.save(A.from(newBoard(name))), { docId: documentId })
  handle.doneLoading()
  return handle
}

// ---------------------------------------------------------------- repo helpers

function newRepo(wsUrl) {
  const repo = new Repo({ network: [new WebSocketClientAdapter(wsUrl, 1000)] })
  repos.push(repo)
  return repo
}

async function closeRepo(repo) {
  try {
    repo.networkSubsystem.adapters.forEach(a => a.disconnect())
  } catch {
    /* ignore */
  }
  const i = repos.indexOf(repo)
  if (i >= 0) repos.splice(i, 1)
}

/** Wait for the server's `peer` answer; returns {peerId, storageId}. */
async function connected(repo, wsUrl, ms = TIMEOUT) {
  const info = () => {
    const peerId = repo.peers[0]
    return peerId ? { peerId, storageId: repo.getStorageIdOfPeer(peerId) } : undefined
  }
  if (info()) return info()
  await withTimeout(
    new Promise(resolve => {
      const on = () => {
        if (info()) {
          repo.networkSubsystem.off("peer", on)
          // the repo's own "peer" listener runs first (registered earlier) and records metadata
          resolve()
        }
      }
      repo.networkSubsystem.on("peer", on)
    }),
    ms,
    `a "peer" answer from ${wsUrl} (is the server running?)`,
  )
  return info()
}

/** Resolve once pred(doc) is true on handle (checked on every change and by polling). */
function waitDoc(handle, pred, ms, what) {
  return withTimeout(
    new Promise(resolve => {
      const check = () => {
        let v = false
        try {
          v = pred(handle.doc())
        } catch {
          v = false
        }
        if (v) {
          handle.off("change", check)
          clearInterval(iv)
          resolve(handle.doc())
        }
      }
      const iv = setInterval(check, 50)
      handle.on("change", check)
      check()
    }),
    ms,
    what,
  )
}

function sameHeads(a, b) {
  if (!a || !b || a.length !== b.length) return false
  const s = new Set(a)
  return b.every(h => s.has(h))
}

/** If the server advertised a storageId, wait until it reports our current heads. */
async function serverHeadsCaughtUp(handle, server, ms, what) {
  if (!server.storageId) return false
  const done = () => sameHeads(handle.getSyncInfo(server.storageId)?.lastHeads, handle.heads())
  if (done()) return true
  await withTimeout(
    new Promise(resolve => {
      const check = () => {
        if (done()) {
          handle.off("remote-heads", check)
          clearInterval(iv)
          resolve()
        }
      }
      const iv = setInterval(check, 50)
      handle.on("remote-heads", check)
    }),
    ms,
    what,
  )
  return true
}

/**
 * Find url from a fresh storage-less Repo (retrying with a new Repo while the server says
 * unavailable) until pred(doc) holds. Proves the server itself serves the content.
 * Returns {repo, handle, doc, attempts}; the caller closes repo.
 */
async function findFresh(wsUrl, url, pred, ms, what) {
  const deadline = deadlineFrom(ms)
  let attempts = 0
  let lastErr = "not tried"
  while (Date.now() < deadline) {
    attempts++
    const repo = newRepo(wsUrl)
    try {
      await connected(repo, wsUrl, left(deadline))
      const handle = await withTimeout(repo.find(url), left(deadline), `find(${url})`)
      const doc = await waitDoc(handle, pred, left(deadline), what)
      return { repo, handle, doc, attempts }
    } catch (e) {
      lastErr = e.message
      await closeRepo(repo)
      if (e instanceof Timeout) break
      await sleep(150)
    }
  }
  throw new Timeout(`${what}: not satisfied within ${ms} ms after ${attempts} attempt(s); last error: ${lastErr}`)
}

async function findOnce(repo, url, ms = TIMEOUT) {
  return withTimeout(repo.find(url), ms, `find(${url})`)
}

function checkWsUrl(u) {
  if (!/^wss?:\/\//.test(u ?? "")) usage(`bad websocket url: ${u}`)
  return u
}
function checkDocUrl(u) {
  if (!isValidAutomergeUrl(u ?? "")) usage(`bad document url (want automerge:<id>): ${u}`)
  return u
}

// ---------------------------------------------------------------- subcommands

async function twoClients(wsUrl) {
  const t0 = Date.now()
  const ms = {}
  const mark = k => (ms[k] = Date.now() - t0)
  const ra = newRepo(wsUrl)
  const server = await connected(ra, wsUrl)
  mark("aConnected")

  const ha = await newBoardHandle(ra, "Interop board")
  ha.change(d => {
    d.tasks.t1 = newTask("t1", "First task", { createdBy: "alice", order: "8" })
  })
  const url = ha.url
  await serverHeadsCaughtUp(ha, server, TIMEOUT, "the server's heads for the new board (remote-heads)")
  mark("serverHasBoard")

  const { repo: rb, handle: hb, attempts } = await findFresh(
    wsUrl,
    url,
    d => d?.tasks?.t1?.title !== undefined,
    TIMEOUT,
    "client B seeing the board with task t1",
  )
  mark("bFound")
  const db = hb.doc()
  if (db.name !== "Interop board") throw new Error(`B sees board name ${JSON.stringify(db.name)}`)
  if (db.tasks.t1.title !== "First task") throw new Error(`B sees t1 title ${JSON.stringify(db.tasks.t1.title)}`)
  if (db.schemaVersion !== 1 || db.columns?.length !== 3) throw new Error(`B sees a malformed board: ${JSON.stringify(toJSON(db))}`)

  hb.change(d => {
    d.tasks.t2 = newTask("t2", "Second task", { createdBy: "bob", order: orderAfterAll(d) })
  })
  await waitDoc(ha, d => d.tasks?.t2?.title === "Second task", TIMEOUT, "client A seeing B's task t2")
  mark("aSawT2")

  ha.change(d => {
    d.tasks.t1.title = "First task (edited)"
    d.tasks.t1.updatedAt = new Date()
  })
  await waitDoc(hb, d => d.tasks?.t1?.title === "First task (edited)", TIMEOUT, "client B seeing A's edit of t1")
  mark("bSawEdit")

  // ephemeral both ways
  const gotB = new Promise(resolve =>
    hb.on("ephemeral-message", e => {
      if (e.message?.hello === "from A") resolve(e)
    }),
  )
  ha.broadcast({ hello: "from A" })
  const eb = await withTimeout(gotB, TIMEOUT, "client B receiving A's ephemeral message")
  mark("bGotEphemeral")
  const gotA = new Promise(resolve =>
    ha.on("ephemeral-message", e => {
      if (e.message?.hello === "from B") resolve(e)
    }),
  )
  hb.broadcast({ hello: "from B" })
  const ea = await withTimeout(gotA, TIMEOUT, "client A receiving B's ephemeral message")
  mark("aGotEphemeral")

  const finalA = ha.doc()
  if (!sameHeads(ha.heads(), hb.heads())) {
    await waitDoc(hb, () => sameHeads(ha.heads(), hb.heads()), TIMEOUT, "A and B converging on the same heads")
  }
  return {
    ok: true,
    url,
    documentId: ha.documentId,
    serverPeerId: server.peerId,
    serverStorageId: server.storageId ?? null,
    findAttempts: attempts,
    tasks: Object.keys(finalA.tasks).sort(),
    titles: taskTitles(finalA).sort(),
    ephemeral: {
      bReceived: eb.message,
      bSenderIsA: eb.senderId === ra.peerId,
      aReceived: ea.message,
      aSenderIsB: ea.senderId === rb.peerId,
    },
    heads: ha.heads(),
    timingsMs: ms,
  }
}

async function createBoard(wsUrl, name) {
  const repo = newRepo(wsUrl)
  const server = await connected(repo, wsUrl)
  const handle = await newBoardHandle(repo, name)
  await serverHeadsCaughtUp(handle, server, TIMEOUT, "the server's heads for the new board (remote-heads)")
  const heads = handle.heads()
  const { repo: r2 } = await findFresh(
    wsUrl,
    handle.url,
    d => d?.name === name && sameHeads(A.getHeads(d).map(String), A.getHeads(handle.doc()).map(String)),
    TIMEOUT,
    "a fresh client finding the new board through the server",
  )
  await closeRepo(r2)
  return { url: handle.url, documentId: handle.documentId, heads }
}

async function addTask(wsUrl, docUrl, taskId, title) {
  const repo = newRepo(wsUrl)
  const server = await connected(repo, wsUrl)
  const handle = await findOnce(repo, docUrl)
  handle.change(d => {
    if (!d.tasks) d.tasks = {}
    d.tasks[taskId] = newTask(taskId, title, { order: orderAfterAll(d) })
  })
  await serverHeadsCaughtUp(handle, server, TIMEOUT, `the server's heads after adding task ${taskId} (remote-heads)`)
  const { repo: r2 } = await findFresh(
    wsUrl,
    docUrl,
    d => d?.tasks?.[taskId]?.title === title,
    TIMEOUT,
    `a fresh client seeing task ${taskId} through the server`,
  )
  await closeRepo(r2)
  return { ok: true, url: docUrl, taskId, title, heads: handle.heads() }
}

async function waitTask(wsUrl, docUrl, title, timeoutMs) {
  const ms = timeoutMs === undefined ? TIMEOUT : Number(timeoutMs)
  if (!(ms > 0)) usage(`bad timeoutMs: ${timeoutMs}`)
  const deadline = deadlineFrom(ms)
  const repo = newRepo(wsUrl)
  await connected(repo, wsUrl, left(deadline))
  const handle = await findOnce(repo, docUrl, left(deadline))
  try {
    const doc = await waitDoc(handle, d => taskTitles(d).includes(title), left(deadline), "a task title")
    return toJSON(doc)
  } catch (e) {
    if (!(e instanceof Timeout)) throw e
    const seen = JSON.stringify(taskTitles(handle.doc()))
    throw new Timeout(`no task titled ${JSON.stringify(title)} within ${ms} ms (titles seen: ${seen})`)
  }
}

async function show(wsUrl, docUrl) {
  const repo = newRepo(wsUrl)
  await connected(repo, wsUrl)
  const handle = await findOnce(repo, docUrl)
  return toJSON(handle.doc())
}

async function ephemeralRelay(wsUrl, docUrl) {
  const N = 3
  const ra = newRepo(wsUrl)
  const rb = newRepo(wsUrl)
  await Promise.all([connected(ra, wsUrl), connected(rb, wsUrl)])
  const [ha, hb] = await Promise.all([findOnce(ra, docUrl), findOnce(rb, docUrl)])
  const nonce = Math.random().toString(36).slice(2)
  const bSeen = new Map()
  let bForeign = 0
  let aEchoes = 0
  let bWrongSender = 0
  hb.on("ephemeral-message", e => {
    if (e.message?.nonce !== nonce) {
      bForeign++
      return
    }
    if (e.senderId !== ra.peerId) bWrongSender++
    bSeen.set(e.message.seq, (bSeen.get(e.message.seq) ?? 0) + 1)
  })
  ha.on("ephemeral-message", e => {
    if (e.message?.nonce === nonce) aEchoes++
  })
  // B must be registered as a peer of the document on the server before A broadcasts:
  // its find() completed, i.e. its request was answered.
  for (let seq = 1; seq <= N; seq++) ha.broadcast({ nonce, seq, text: `ephemeral ${seq}` })
  await withTimeout(
    new Promise(resolve => {
      const iv = setInterval(() => {
        if (bSeen.size === N) {
          clearInterval(iv)
          resolve()
        }
      }, 20)
    }),
    TIMEOUT,
    `client B receiving all ${N} ephemeral messages (got ${bSeen.size} so far)`,
  ).catch(e => {
    throw new Error(`${e.message}; received seqs: ${JSON.stringify([...bSeen.keys()])}`)
  })
  await sleep(500) // catch late duplicates / echoes
  const counts = Object.fromEntries([...bSeen.entries()].sort((x, y) => x[0] - y[0]))
  const duplicates = [...bSeen.values()].reduce((a, c) => a + (c - 1), 0)
  const result = {
    ok: duplicates === 0 && aEchoes === 0 && bWrongSender === 0,
    url: docUrl,
    sent: N,
    received: [...bSeen.values()].reduce((a, c) => a + c, 0),
    unique: bSeen.size,
    countsBySeq: counts,
    duplicates,
    echoesToSender: aEchoes,
    wrongSenderId: bWrongSender,
    otherMessages: bForeign,
  }
  if (!result.ok) {
    process.stdout.write(JSON.stringify(result) + "\n")
    throw new Error(
      `ephemeral relay misbehaved: duplicates=${duplicates} echoesToSender=${aEchoes} wrongSenderId=${bWrongSender}`,
    )
  }
  return result
}

/** find() of a document nobody has: the client must learn it is unavailable, not hang. */
async function findMissing(wsUrl) {
  const repo = newRepo(wsUrl)
  await connected(repo, wsUrl)
  const url = generateAutomergeUrl()
  const started = Date.now()
  try {
    await findOnce(repo, url)
  } catch (e) {
    if (e instanceof Timeout) throw e
    return { unavailable: true, url, ms: Date.now() - started, error: String(e?.message ?? e) }
  }
  throw new Error(`find(${url}) resolved for a document nobody has`)
}

// ---------------------------------------------------------------- main

const commands = {
  "two-clients": { n: [1, 1], run: ([u]) => twoClients(checkWsUrl(u)) },
  "create-board": { n: [2, 2], run: ([u, name]) => createBoard(checkWsUrl(u), name) },
  "add-task": { n: [4, 4], run: ([u, d, id, t]) => addTask(checkWsUrl(u), checkDocUrl(d), id, t) },
  "wait-task": { n: [3, 4], run: ([u, d, t, ms]) => waitTask(checkWsUrl(u), checkDocUrl(d), t, ms) },
  show: { n: [2, 2], run: ([u, d]) => show(checkWsUrl(u), checkDocUrl(d)) },
  "ephemeral-relay": { n: [2, 2], run: ([u, d]) => ephemeralRelay(checkWsUrl(u), checkDocUrl(d)) },
  "find-missing": { n: [1, 1], run: ([u]) => findMissing(checkWsUrl(u)) },
}

const cmd = commands[sub]
if (!cmd) usage(sub ? `unknown subcommand: ${sub}` : "missing subcommand")
if (args.length < cmd.n[0] || args.length > cmd.n[1]) usage(`${sub}: wrong number of arguments`)
// last-resort watchdog: no subcommand may outlive a few bounded waits
const watchdogMs = (sub === "wait-task" && args[3] ? Number(args[3]) : TIMEOUT) * 4 + 5000
setTimeout(() => fail(`watchdog: still running after ${watchdogMs} ms`), watchdogMs).unref()

cmd
  .run(args)
  .then(ok)
  .catch(e => fail(e instanceof Timeout ? e.message : (e?.message ?? String(e))))
