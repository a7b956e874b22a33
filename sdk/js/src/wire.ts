// Shapes of docs/protocol.md: what the client sends and what the server answers.
import type { Payload } from './payload.js';

/** A stream position: the last publication seen in one incarnation (epoch) of a channel. */
export interface StreamPosition {
  epoch: string;
  offset: number;
}

export interface ClientInfo {
  user: string;
  client: string;
  conn_info?: unknown;
  chan_info?: unknown;
}

/** A publication as the application gets it: `data` is the JSON value, or bytes. */
export interface Publication {
  offset: number;
  epoch?: string;
  data: any;
  binary?: boolean;
  info?: ClientInfo;
  tags?: Record<string, string>;
}

export interface SubscribeResult {
  epoch: string;
  offset: number;
  recovered?: boolean;
  publications?: Publication[];
  gap?: { from: number; to: number };
  positioned?: boolean;
  more?: boolean;
  expires?: number;
}

export interface PublishResult {
  offset?: number;
  epoch?: string;
  duplicate?: boolean;
}

export interface ReplyError {
  code: number;
  message: string;
  temporary?: boolean;
}

/** A command: `id`, its type and its fields. A publish carries its payload unencoded. */
export interface Command {
  id: number;
  type: string;
  body: any;
  payload?: Payload;
}

/** A decoded server message: a reply (`id`) or a push (`push`). */
export interface ServerMessage {
  id?: number;
  error?: ReplyError;
  push?: Record<string, any>;
  [result: string]: any;
}

/** An encoding of the protocol: the JSON one is built in, MessagePack is a separate import. */
export interface Codec {
  /** The WebSocket subprotocol. */
  readonly name: string;
  /** Commands into frames, each at most `limit` bytes where a split can make it so. */
  encode(commands: Command[], limit: number): (string | Uint8Array)[];
  decode(frame: string | Uint8Array): ServerMessage[];
  /** Turns a received publication's `data` into what the application gets. */
  publication(p: any): Publication;
}
