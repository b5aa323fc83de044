// The Taskflow window: sign in, pick a workspace and a board, work on its cards. Everything
// goes through the Rust side (api.ts), which keeps the boards on this device and syncs them.
import {
  api,
  errorOf,
  on,
  PRIORITIES,
  type Board,
  type Card,
  type Member,
  type Notification,
  type Priority,
  type Project,
  type SessionInfo,
  type Status,
  type Viewer,
  type Workspace,
} from "./api";
import { h, shortDate, toLocalInput } from "./dom";

interface State {
  session: SessionInfo | null;
  workspaces: Workspace[];
  workspace: string | null;
  members: Map<string, Member>;
  boards: Project[];
  boardId: string | null;
  board: Board | null;
  status: Status | null;
  connection: string;
  viewers: Viewer[];
  openCard: string | null;
  notifications: Notification[];
  unread: number;
  showNotifications: boolean;
  showHelp: boolean;
  /** What is being loaded, for the loading state. */
  loading: string | null;
  /** The last failure, shown in a banner until dismissed or replaced. */
  error: string | null;
}

const state: State = {
  session: null,
  workspaces: [],
  workspace: localStorage.getItem("workspace"),
  members: new Map(),
  boards: [],
  boardId: localStorage.getItem("board"),
  board: null,
  status: null,
  connection: "connecting",
  viewers: [],
  openCard: null,
  notifications: [],
  unread: 0,
  showNotifications: false,
  showHelp: false,
  loading: "Starting…",
  error: null,
};

const root = document.getElementById("app")!;

/** Runs `work`, showing its failure in the banner (or the sign-in form when signed out). */
async function attempt<T>(work: () => Promise<T>): Promise<T | undefined> {
  try {
    const result = await work();
    return result;
  } catch (e) {
    const error = errorOf(e);
    if (error.kind === "signedOut") {
      state.session = null;
    }
    state.error = error.message;
    render();
    return undefined;
  }
}

function memberName(userId: string): string {
  return state.members.get(userId)?.name ?? userId.slice(0, 8);
}

function initials(userId: string): string {
  return memberName(userId)
    .split(/\s+/)
    .map((w) => w[0] ?? "")
    .join("")
    .slice(0, 2)
    .toUpperCase();
}

// ---------------------------------------------------------------- loading what is shown

async function start() {
  const session = await attempt(() => api.session());
  state.loading = null;
  state.session = session ?? null;
  render();
  if (state.session) await afterSignIn();
}

async function afterSignIn() {
  state.loading = "Loading your workspaces…";
  render();
  const workspaces = await attempt(() => api.workspaces());
  state.loading = null;
  if (workspaces) {
    state.workspaces = workspaces;
    if (!workspaces.some((w) => w.id === state.workspace)) {
      state.workspace = workspaces[0]?.id ?? null;
    }
  }
  if (state.workspace) {
    await pickWorkspace(state.workspace, false);
    // The board last open, if it is still in this workspace (or, offline with no list, it is
    // on this device); otherwise the first.
    const remembered = state.boardId;
    const known = state.boards.some((b) => b.documentId === remembered);
    const target = remembered && (known || state.boards.length === 0) ? remembered : state.boards[0]?.documentId;
    if (target) await openBoard(target);
  }
  const inbox = await attempt(() => api.notifications());
  if (inbox) {
    state.notifications = inbox.notifications;
    state.unread = inbox.unreadCount;
  }
  render();
}

async function pickWorkspace(id: string, openFirst = true) {
  state.workspace = id;
  localStorage.setItem("workspace", id);
  const [boards, members] = await Promise.all([
    attempt(() => api.boards(id)),
    attempt(() => api.members(id)),
  ]);
  if (boards) state.boards = boards;
  if (members) state.members = new Map(members.map((m) => [m.userId, m]));
  if (openFirst) {
    const first = state.boards[0];
    state.board = null;
    state.boardId = null;
    if (first) await openBoard(first.documentId);
  }
  render();
}

async function openBoard(documentId: string) {
  state.boardId = documentId;
  state.openCard = null;
  localStorage.setItem("board", documentId);
  state.loading = "Opening the board…";
  render();
  const board = await attempt(() => api.openBoard(documentId));
  state.loading = null;
  state.board = board ?? null;
  if (board) {
    state.status = (await attempt(() => api.status(documentId))) ?? null;
    state.viewers = (await attempt(() => api.viewers(documentId))) ?? [];
  }
  render();
}

function typingInPanel(): boolean {
  return !!document.activeElement?.matches(".panel input, .panel textarea, .panel select");
}

let reloading: number | undefined;
/** Re-reads the open board soon (changes come in bursts). */
function reloadBoard() {
  window.clearTimeout(reloading);
  reloading = window.setTimeout(async () => {
    if (!state.boardId) return;
    const board = await attempt(() => api.board(state.boardId!));
    if (!board) return;
    state.board = board;
    renderBoard();
    // The panel follows changes unless someone is typing in one of its fields.
    if (!typingInPanel()) renderPanel();
  }, 40);
}

// ---------------------------------------------------------------- events from the Rust side

void on("board-changed", ({ documentId }) => {
  if (documentId === state.boardId) reloadBoard();
});
void on("sync-status", ({ documentId, status }) => {
  if (documentId === state.boardId) {
    state.status = status;
    renderHeader();
  }
});
void on("presence", ({ documentId, viewers }) => {
  if (documentId === state.boardId) {
    state.viewers = viewers;
    renderHeader();
  }
});
void on("connection", ({ state: connection }) => {
  state.connection = connection;
  renderHeader();
});
void on("notification", ({ notification }) => {
  state.notifications = [notification, ...state.notifications.filter((n) => n.id !== notification.id)];
  renderHeader();
  renderNotifications();
});
void on("notifications-synced", ({ unreadCount, notifications }) => {
  state.unread = unreadCount;
  const fresh = new Set(notifications.map((n) => n.id));
  state.notifications = [...notifications, ...state.notifications.filter((n) => !fresh.has(n.id))];
  renderHeader();
  renderNotifications();
});
void on("notifications-read", ({ ids, all }) => {
  state.notifications = state.notifications.map((n) =>
    all || ids.includes(n.id) ? { ...n, read: true } : n,
  );
  renderNotifications();
});
void on("unread", ({ count }) => {
  state.unread = count;
  renderHeader();
});
void on("refused", ({ reason }) => {
  state.error = `The server refused a change: ${reason}`;
  render();
});
void on("resync", () => reloadBoard());

// ---------------------------------------------------------------- rendering

function render() {
  root.replaceChildren();
  if (state.loading && !state.session) {
    root.append(h("div", { class: "centered muted" }, state.loading));
    return;
  }
  if (!state.session) {
    root.append(signInForm());
    return;
  }
  const parts = [
    h("header", { id: "header" }),
    errorBanner(),
    h("main", { id: "board" }),
    h("aside", { id: "panel", class: "panel" }),
    h("aside", { id: "notifications", class: "notifications" }),
    state.showHelp ? helpDialog() : null,
  ];
  root.append(...parts.filter((part): part is HTMLElement => part !== null));
  renderHeader();
  renderBoard();
  renderPanel();
  renderNotifications();
}

function errorBanner(): HTMLElement | null {
  if (!state.error) return null;
  return h(
    "div",
    { class: "banner", role: "alert" },
    h("span", {}, state.error),
    h("button", { onclick: () => ((state.error = null), render()) }, "Dismiss"),
  );
}

function signInForm(): HTMLElement {
  const server = h("input", {
    name: "server",
    value: localStorage.getItem("server") ?? "http://localhost:8080",
    required: true,
  });
  const email = h("input", { name: "email", type: "email", autocomplete: "username", required: true });
  const password = h("input", {
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    {
      class: "sign-in",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        submit.setAttribute("disabled", "");
        submit.textContent = "Signing in…";
        localStorage.setItem("server", server.value);
        const session = await attempt(() => api.signIn(server.value, email.value, password.value));
        if (session) {
          state.session = session;
          state.error = null;
          render();
          await afterSignIn();
        }
      },
    },
    h("h1", {}, "Taskflow"),
    h("p", { class: "muted" }, "Sign in to your team's server. Your boards stay on this computer and work offline."),
    state.error ? h("p", { class: "error", role: "alert" }, state.error) : null,
    h("label", {}, "Server", server),
    h("label", {}, "Email", email),
    h("label", {}, "Password", password),
    submit,
  );
  queueMicrotask(() => email.focus());
  return form;
}

function statusBadge(): HTMLElement {
  const status = state.status;
  let label: string;
  let kind: string;
  if (!state.board) {
    [label, kind] = [state.connection === "online" ? "Online" : "Offline", state.connection === "online" ? "synced" : "offline"];
  } else if (!status || status.state === "offline" || state.connection !== "online") {
    const pending = status?.pending ?? 0;
    [label, kind] = [pending ? `Offline · ${pending} change${pending === 1 ? "" : "s"} not sent` : "Offline", "offline"];
  } else if (status.state === "syncing") {
    [label, kind] = [status.pending ? `Syncing ${status.pending} change${status.pending === 1 ? "" : "s"}…` : "Syncing…", "syncing"];
  } else if (status.state === "unavailable") {
    [label, kind] = ["Not on the server", "offline"];
  } else {
    [label, kind] = ["Synced", "synced"];
  }
  return h("span", { class: `status ${kind}`, "data-testid": "sync-status", title: label }, label);
}

function renderHeader() {
  const header = document.getElementById("header");
  if (!header) return;
  const workspaces = h(
    "select",
    {
      "aria-label": "Workspace",
      onchange: (e: Event) => pickWorkspace((e.target as HTMLSelectElement).value),
    },
    state.workspaces.map((w) =>
      h("option", { value: w.id, selected: w.id === state.workspace }, w.name),
    ),
  );
  const boards = h(
    "select",
    {
      id: "board-picker",
      "aria-label": "Board",
      onchange: (e: Event) => openBoard((e.target as HTMLSelectElement).value),
    },
    state.boards.length === 0 ? h("option", { value: "" }, "No boards") : null,
    state.boards.map((b) =>
      h("option", { value: b.documentId, selected: b.documentId === state.boardId }, b.name),
    ),
  );
  const others = state.viewers.filter((v) => v.userId !== state.session?.userId);
  const presence = h(
    "div",
    { class: "presence", "aria-label": "Also here" },
    others.map((v) =>
      h("span", { class: "avatar", title: `${memberName(v.userId)} is viewing${v.taskId ? " a card" : ""}` }, initials(v.userId)),
    ),
  );
  const bell = h(
    "button",
    {
      class: "bell",
      "aria-label": `Notifications, ${state.unread} unread`,
      onclick: () => toggleNotifications(),
    },
    "Inbox",
    state.unread > 0 ? h("span", { class: "badge", "data-testid": "unread" }, String(state.unread)) : null,
  );
  header.replaceChildren(
    h("span", { class: "brand" }, "Taskflow"),
    workspaces,
    boards,
    h("span", { class: "spacer" }),
    presence,
    statusBadge(),
    bell,
    h("button", { onclick: () => signOut(), title: state.session?.email ?? "" }, "Sign out"),
  );
}

function renderBoard() {
  const main = document.getElementById("board");
  if (!main) return;
  if (state.loading) {
    main.replaceChildren(h("div", { class: "centered muted" }, state.loading));
    return;
  }
  if (state.workspaces.length === 0) {
    main.replaceChildren(
      h("div", { class: "centered empty" }, h("h2", {}, "No workspace yet"), h("p", {}, "Ask a teammate to invite you; invitations arrive as notifications.")),
    );
    return;
  }
  if (!state.board) {
    main.replaceChildren(
      h(
        "div",
        { class: "centered empty" },
        h("h2", {}, state.boards.length ? "Pick a board" : "No boards here yet"),
        h("p", {}, state.boards.length ? "Choose one in the bar above (press B)." : "Create one from the web or with `taskflow board create`."),
      ),
    );
    return;
  }
  const board = state.board;
  main.replaceChildren(
    h("h2", { class: "board-name" }, board.name),
    h("div", { class: "columns" }, board.columns.map((column) => columnView(board, column.id))),
  );
}

function columnView(board: Board, columnId: string): HTMLElement {
  const column = board.columns.find((c) => c.id === columnId)!;
  const over = column.wipLimit !== null && column.cards.length > column.wipLimit;
  const list = h(
    "ol",
    {
      class: "cards",
      "data-column": column.id,
      ondragover: (e: Event) => e.preventDefault(),
      ondrop: (e: Event) => dropOn(e as DragEvent, column.id, null),
    },
    column.cards.map((card) => cardView(card, column.id)),
    column.cards.length === 0 ? h("li", { class: "empty-column muted" }, "No cards") : null,
  );
  const add = h("input", {
    class: "add-card",
    placeholder: "Add a card…",
    "aria-label": `Add a card to ${column.name}`,
    onkeydown: async (e: Event) => {
      const key = (e as KeyboardEvent).key;
      const input = e.target as HTMLInputElement;
      if (key === "Escape") input.blur();
      if (key !== "Enter" || !input.value.trim()) return;
      const title = input.value;
      input.value = "";
      await attempt(() => api.addCard(board.documentId, column.id, title));
    },
  });
  return h(
    "section",
    { class: "column", "data-testid": `column-${column.id}` },
    h("h3", {}, column.name, h("span", { class: over ? "count over" : "count" }, column.wipLimit !== null ? `${column.cards.length}/${column.wipLimit}` : String(column.cards.length))),
    list,
    add,
  );
}

function cardView(card: Card, columnId: string): HTMLElement {
  const due = card.due !== null ? h("span", { class: card.due < Date.now() && columnId !== "done" ? "due late" : "due" }, shortDate(card.due)) : null;
  return h(
    "li",
    {
      class: `card${state.openCard === card.id ? " open" : ""}`,
      draggable: "true",
      tabindex: 0,
      "data-card": card.id,
      ondragstart: (e: Event) => (e as DragEvent).dataTransfer?.setData("text/plain", card.id),
      ondragover: (e: Event) => e.preventDefault(),
      ondrop: (e: Event) => {
        e.stopPropagation();
        dropOn(e as DragEvent, columnId, card.id);
      },
      onclick: () => openCard(card.id),
      onkeydown: (e: Event) => {
        if ((e as KeyboardEvent).key === "Enter") openCard(card.id);
      },
    },
    h("div", { class: "title" }, card.title),
    h(
      "div",
      { class: "meta" },
      card.priority !== "none" ? h("span", { class: `priority ${card.priority}` }, card.priority) : null,
      card.labels.map((l) => h("span", { class: "label" }, l)),
      due,
      card.comments.length ? h("span", { class: "muted" }, `${card.comments.length} comment${card.comments.length === 1 ? "" : "s"}`) : null,
      h("span", { class: "assignees" }, card.assignees.map((a) => h("span", { class: "avatar small", title: memberName(a) }, initials(a)))),
    ),
  );
}

async function dropOn(e: DragEvent, column: string, before: string | null) {
  e.preventDefault();
  const task = e.dataTransfer?.getData("text/plain");
  if (!task || !state.board || task === before) return;
  await attempt(() => api.moveCard(state.board!.documentId, task, column, before));
}

function findCard(id: string | null): Card | undefined {
  if (!id || !state.board) return undefined;
  for (const column of state.board.columns) {
    const card = column.cards.find((c) => c.id === id);
    if (card) return card;
  }
  return undefined;
}

/** Puts what a command answered for a card in place of what was shown. */
function replaceCard(card: Card) {
  if (!state.board) return;
  for (const column of state.board.columns) {
    column.cards = column.cards.map((c) => (c.id === card.id ? card : c));
  }
}

function openCard(id: string | null) {
  state.openCard = id;
  if (state.boardId) void attempt(() => api.setViewing(state.boardId!, id));
  renderBoard();
  renderPanel();
  (document.querySelector(".panel input[name=title]") as HTMLInputElement | null)?.focus();
}

function renderPanel() {
  const panel = document.getElementById("panel");
  if (!panel) return;
  const card = findCard(state.openCard);
  panel.classList.toggle("shown", !!card);
  if (!card || !state.board) {
    panel.replaceChildren();
    return;
  }
  const board = state.board.documentId;
  const save = (patch: Parameters<typeof api.updateCard>[2]) => attempt(() => api.updateCard(board, card.id, patch));
  const title = h("input", { name: "title", value: card.title, "aria-label": "Title", onchange: (e: Event) => save({ title: (e.target as HTMLInputElement).value }) });
  const description = h("textarea", { name: "description", rows: 5, placeholder: "Add a description…", onchange: (e: Event) => save({ description: (e.target as HTMLTextAreaElement).value }) }, card.description);
  const priority = h(
    "select",
    { name: "priority", onchange: (e: Event) => save({ priority: (e.target as HTMLSelectElement).value as Priority }) },
    PRIORITIES.map((p) => h("option", { value: p, selected: p === card.priority }, p)),
  );
  const due = h("input", {
    name: "due",
    type: "datetime-local",
    value: card.due !== null ? toLocalInput(card.due) : "",
    onchange: (e: Event) => {
      const value = (e.target as HTMLInputElement).value;
      void save(value ? { due: new Date(value).getTime() } : { clearDue: true });
    },
  });
  const labels = h("input", {
    name: "labels",
    value: card.labels.join(", "),
    placeholder: "bug, design",
    onchange: (e: Event) => save({ labels: (e.target as HTMLInputElement).value.split(",") }),
  });
  const assignees = h(
    "div",
    { class: "assignee-list" },
    [...state.members.values()].map((m) =>
      h(
        "label",
        { class: "check" },
        h("input", {
          type: "checkbox",
          checked: card.assignees.includes(m.userId),
          onchange: async (e: Event) => {
            const on = (e.target as HTMLInputElement).checked;
            // From the card as it is now (an earlier click, or a teammate, may have changed it).
            const current = findCard(card.id)?.assignees ?? card.assignees;
            const next = on ? [...new Set([...current, m.userId])] : current.filter((a) => a !== m.userId);
            const saved = await save({ assignees: next });
            if (saved) replaceCard(saved);
          },
        }),
        m.name,
      ),
    ),
  );
  const comment = h("textarea", { name: "comment", rows: 2, placeholder: "Write a comment… (Ctrl+Enter)" });
  const sendComment = async () => {
    if (!comment.value.trim()) return;
    const body = comment.value;
    comment.value = "";
    const commented = await attempt(() => api.addComment(board, card.id, body));
    if (!commented) return;
    // Shown at once, and the box ready for the next one.
    replaceCard(commented);
    renderPanel();
    (document.querySelector(".panel textarea[name=comment]") as HTMLTextAreaElement | null)?.focus();
  };
  comment.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) void sendComment();
  });
  panel.replaceChildren(
    h("div", { class: "panel-head" }, h("button", { class: "close", "aria-label": "Close", onclick: () => openCard(null) }, "×")),
    h("label", {}, "Title", title),
    h("label", {}, "Description", description),
    h("div", { class: "row" }, h("label", {}, "Priority", priority), h("label", {}, "Due", due)),
    h("label", {}, "Labels", labels),
    h("fieldset", {}, h("legend", {}, "Assignees"), assignees),
    h(
      "section",
      { class: "comments" },
      h("h4", {}, `Comments (${card.comments.length})`),
      card.comments.map((c) =>
        h("div", { class: "comment" }, h("div", { class: "muted" }, `${memberName(c.author)} · ${shortDate(c.createdAt)}`), h("div", {}, c.body)),
      ),
      comment,
      h("button", { onclick: () => sendComment() }, "Comment"),
    ),
    h(
      "button",
      {
        class: "danger",
        onclick: async () => {
          await attempt(() => api.archiveCard(board, card.id));
          openCard(null);
        },
      },
      "Archive card",
    ),
  );
}

function toggleNotifications() {
  state.showNotifications = !state.showNotifications;
  renderNotifications();
}

function renderNotifications() {
  const aside = document.getElementById("notifications");
  if (!aside) return;
  aside.classList.toggle("shown", state.showNotifications);
  if (!state.showNotifications) {
    aside.replaceChildren();
    return;
  }
  const empty = state.notifications.length === 0;
  aside.replaceChildren(
    h(
      "div",
      { class: "panel-head" },
      h("h3", {}, "Notifications"),
      h("button", { onclick: () => attempt(() => api.markRead(null)) }, "Mark all read"),
    ),
    h("p", { class: "muted", hidden: !empty }, "Nothing yet. Assignments, mentions and deadlines show up here."),
    h(
      "ul",
      {},
      state.notifications.map((n) =>
        h(
          "li",
          {
            class: n.read ? "read" : "unread",
            onclick: () => {
              if (!n.read) void attempt(() => api.markRead(n.id));
              if (n.taskId && findCard(n.taskId)) openCard(n.taskId);
            },
          },
          h("div", {}, n.title),
          n.body ? h("div", { class: "muted" }, n.body) : null,
          h("div", { class: "muted small" }, new Date(n.createdAt).toLocaleString()),
        ),
      ),
    ),
  );
}

function helpDialog(): HTMLElement {
  const keys: [string, string][] = [
    ["N", "add a card to the first column"],
    ["B", "pick a board"],
    ["I", "notifications"],
    ["Esc", "close the card or panel"],
    ["Ctrl+Enter", "send a comment"],
    ["?", "this help"],
  ];
  return h(
    "div",
    { class: "dialog", role: "dialog", onclick: () => ((state.showHelp = false), render()) },
    h("div", { class: "dialog-body" }, h("h3", {}, "Keyboard shortcuts"), h("dl", {}, keys.flatMap(([k, what]) => [h("dt", {}, h("kbd", {}, k)), h("dd", {}, what)]))),
  );
}

async function signOut() {
  await attempt(() => api.signOut());
  Object.assign(state, { session: null, board: null, boardId: null, boards: [], workspaces: [], notifications: [], unread: 0 });
  localStorage.removeItem("board");
  render();
}

// ---------------------------------------------------------------- keyboard shortcuts

document.addEventListener("keydown", (e) => {
  const typing = (e.target as HTMLElement).closest("input, textarea, select");
  if (e.key === "Escape") {
    if (state.showHelp) state.showHelp = false;
    else if (state.openCard) return openCard(null);
    else state.showNotifications = false;
    return render();
  }
  if (typing || e.ctrlKey || e.metaKey || e.altKey || !state.session) return;
  switch (e.key) {
    case "n":
      e.preventDefault();
      (document.querySelector(".add-card") as HTMLInputElement | null)?.focus();
      break;
    case "b":
      (document.getElementById("board-picker") as HTMLSelectElement | null)?.focus();
      break;
    case "i":
      toggleNotifications();
      break;
    case "?":
      state.showHelp = true;
      render();
      break;
  }
});

void start();
