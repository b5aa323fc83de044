// The app's Rust side, typed: its commands (invoke) and events (listen).
import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";

export interface SessionInfo {
  serverUrl: string;
  userId: string;
  name: string;
  email: string;
}
export interface Workspace {
  id: string;
  name: string;
  role: string;
}
export interface Member {
  userId: string;
  email: string;
  name: string;
  role: string;
}
export interface Project {
  id: string;
  workspaceId: string;
  name: string;
  documentId: string;
}
export interface Comment {
  id: string;
  author: string;
  body: string;
  createdAt: number;
}
export interface Card {
  id: string;
  title: string;
  description: string;
  column: string;
  assignees: string[];
  labels: string[];
  priority: Priority;
  due: number | null;
  createdBy: string;
  createdAt: number;
  updatedAt: number;
  comments: Comment[];
}
export type Priority = "none" | "low" | "medium" | "high" | "urgent";
export const PRIORITIES: Priority[] = ["none", "low", "medium", "high", "urgent"];
export interface Column {
  id: string;
  name: string;
  wipLimit: number | null;
  cards: Card[];
}
export interface Board {
  documentId: string;
  name: string;
  columns: Column[];
}
export interface Status {
  state: "offline" | "syncing" | "synced" | "unavailable";
  pending: number;
}
export interface Viewer {
  userId: string;
  taskId: string | null;
}
export interface Notification {
  id: string;
  kind: string;
  title: string;
  body: string;
  projectId: string | null;
  taskId: string | null;
  read: boolean;
  createdAt: string;
}
export interface CardPatch {
  title?: string;
  description?: string;
  assignees?: string[];
  labels?: string[];
  priority?: Priority;
  due?: number;
  clearDue?: boolean;
}

/** A failed command, as the Rust side reports it. */
export interface AppError {
  kind: "signedOut" | "badInput" | "rejected" | "network" | "notFound" | "failed";
  message: string;
}

export function errorOf(e: unknown): AppError {
  if (typeof e === "object" && e !== null && "kind" in e && "message" in e) {
    return e as AppError;
  }
  return { kind: "failed", message: String(e) };
}

export const api = {
  session: () => invoke<SessionInfo | null>("session"),
  signIn: (server: string, email: string, password: string) =>
    invoke<SessionInfo>("sign_in", { server, email, password }),
  signOut: () => invoke<void>("sign_out"),
  workspaces: () => invoke<Workspace[]>("workspaces"),
  members: (workspace: string) => invoke<Member[]>("members", { workspace }),
  boards: (workspace: string) => invoke<Project[]>("boards", { workspace }),
  openBoard: (board: string) => invoke<Board>("open_board", { board }),
  board: (board: string) => invoke<Board>("board", { board }),
  status: (board: string) => invoke<Status>("status", { board }),
  viewers: (board: string) => invoke<Viewer[]>("viewers", { board }),
  setViewing: (board: string, task: string | null) => invoke<void>("set_viewing", { board, task }),
  addCard: (board: string, column: string, title: string) =>
    invoke<Card>("add_card", { board, column, title }),
  updateCard: (board: string, task: string, patch: CardPatch) =>
    invoke<Card>("update_card", { board, task, patch }),
  moveCard: (board: string, task: string, column: string, before: string | null) =>
    invoke<void>("move_card", { board, task, column, before }),
  archiveCard: (board: string, task: string) => invoke<void>("archive_card", { board, task }),
  addComment: (board: string, task: string, body: string) =>
    invoke<Card>("add_comment", { board, task, body }),
  notifications: () =>
    invoke<{ notifications: Notification[]; unreadCount: number }>("notifications"),
  markRead: (notification: string | null) => invoke<void>("mark_read", { notification }),
};

export interface Events {
  "board-changed": { documentId: string; tasks: string[] };
  "sync-status": { documentId: string; status: Status };
  presence: { documentId: string; viewers: Viewer[] };
  connection: { state: "disabled" | "connecting" | "online" | "offline"; error?: string };
  notification: { notification: Notification };
  "notifications-synced": { unreadCount: number; notifications: Notification[] };
  "notifications-read": { ids: string[]; all: boolean };
  unread: { count: number };
  refused: { reason: string };
  resync: Record<string, never>;
}

export function on<K extends keyof Events>(
  event: K,
  handler: (payload: Events[K]) => void,
): Promise<UnlistenFn> {
  return listen<Events[K]>(event, (e) => handler(e.payload));
}
