#!/usr/bin/env node
// Reference automerge-repo sync server (the stock JS implementation), used as the
// baseline for interop tests and benchmark comparisons with the Taskflow Rust server.
//
//   node ref-server.mjs <port> <storageDir> [host]
//
// ws WebSocketServer + NodeWSServerAdapter + NodeFSStorageAdapter + Repo whose
// sharePolicy returns false (the server never announces documents, it only answers
// peers that ask). Binds 127.0.0.1 unless a host is given. Prints "listening <port>"
// on stdout once ready; exits cleanly on SIGINT/SIGTERM.
import { WebSocketServer } from "ws"
import { Repo } from "@automerge/automerge-repo"
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"
import fs from "node:fs"
import os from "node:os"

const [portArg, storageDir, host = "127.0.0.1"] = process.argv.slice(2)
const port = Number(portArg)
if (!Number.isInteger(port) || port < 0 || port > 65535 || !storageDir) {
  process.stderr.write("usage: node ref-server.mjs <port> <storageDir> [host]\n")
  process.exit(2)
}
fs.mkdirSync(storageDir, { recursive: true })

const wss = new WebSocketServer({ host, port })
wss.on("error", err => {
  process.stderr.write(`ref-server: ${err.message}\n`)
  process.exit(1)
})

const repo = new Repo({
  network: [new NodeWSServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(storageDir),
  peerId: `ref-server-${os.hostname()}-${process.pid}`,
  sharePolicy: async () => false,
})

wss.on("listening", () => {
  process.stdout.write(`listening ${wss.address().port}\n`)
})

let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  const hard = setTimeout(() => process.exit(0), 2000)
  hard.unref()
  try {
    await repo.flush()
  } catch (e) {
    process.stderr.write(`ref-server: flush failed: ${e}\n`)
  }
  wss.close()
  process.exit(0)
}
process.on("SIGINT", stop)
process.on("SIGTERM", stop)
