/**
 * HTTP/2 flow-control windows for the gRPC server.
 *
 * Node's HTTP/2 defaults are 64 KiB per stream and 64 KiB per connection: a client may have at most
 * 64 KiB of request bodies in flight on a connection before tollgate's WINDOW_UPDATE frames come back.
 * ext_authz requests carry whole LLM prompts (20 KB is ordinary, 400 KB happens), so that window made
 * the client wait on round trips and tollgate handle a read and a WINDOW_UPDATE every few KB. Larger
 * windows cost no memory by themselves (Node reads and consumes DATA as it arrives; what bounds the
 * bodies held here is server.max_concurrent_streams): bench, medium (20 KB) closed loop, same
 * session: 4-20% more checks/s and ~10% less CPU per check.
 *
 * grpc-js (1.14) has no server option for this, so the windows are applied to each HTTP/2 server it
 * created (its `http2Servers` map) after bind: the stream window as a server setting, the connection
 * window per session. If a grpc-js upgrade renames that map, tuneFlowControl returns false (the caller
 * logs it) and test/overload.test.ts fails, instead of the windows silently reverting to 64 KiB.
 */
import type { Http2Server, Http2Session } from 'node:http2';
import type { Server } from '@grpc/grpc-js';

/** Per-stream window (SETTINGS_INITIAL_WINDOW_SIZE): one whole typical request body. */
export const STREAM_WINDOW = 1024 * 1024;
/** Per-connection window: several streams' bodies in flight at once. */
export const CONNECTION_WINDOW = 4 * 1024 * 1024;

/** Apply the windows to every HTTP/2 server of a bound grpc-js Server; false if none was found. */
export function tuneFlowControl(server: Server): boolean {
  const servers = (server as unknown as { http2Servers?: Map<Http2Server, unknown> }).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) return false;
  for (const h2 of servers.keys()) {
    h2.updateSettings({ initialWindowSize: STREAM_WINDOW });
    h2.on('session', (session: Http2Session) => {
      try {
        session.setLocalWindowSize(CONNECTION_WINDOW);
      } catch {
        // a session that is already closing: nothing to tune
      }
    });
  }
  return true;
}
