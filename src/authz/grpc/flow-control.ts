/**
 * HTTP/2 flow-control windows of the gRPC server (server.http2_stream_window and
 * server.http2_connection_window).
 *
 * Node's defaults are 64 KiB per stream and per connection: a client may have at most 64 KiB of
 * request bodies in flight on a connection before tollgate's WINDOW_UPDATE frames come back. Larger
 * windows cost no memory by themselves (Node reads and consumes DATA as it arrives; what bounds the
 * bodies held here is server.max_concurrent_streams). Larger windows help large bodies and hurt
 * small ones (less batching; docs/performance.md), so the default stays Node's.
 *
 * grpc-js (1.14) has no server option for this, so the windows are applied to each HTTP/2 server it
 * created (its `http2Servers` map) after bind: the stream window as a server setting, the connection
 * window per session. If a grpc-js upgrade renames that map, tuneFlowControl returns false (the caller
 * logs it) and test/overload.test.ts fails, instead of the windows silently reverting to 64 KiB.
 */
import type { Http2Server, Http2Session } from 'node:http2';
import type { Server } from '@grpc/grpc-js';

/** HTTP/2's initial flow-control window (RFC 9113 §6.9.2; Node's default). */
const DEFAULT_WINDOW = 65_535;

/**
 * Apply the windows to every HTTP/2 server of a bound grpc-js Server. True when there was nothing to
 * change or it was applied; false if grpc-js's servers could not be found.
 */
export function tuneFlowControl(server: Server, streamWindow: number, connectionWindow: number): boolean {
  if (streamWindow === DEFAULT_WINDOW && connectionWindow === DEFAULT_WINDOW) return true;
  const servers = (server as unknown as { http2Servers?: Map<Http2Server, unknown> }).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) return false;
  for (const h2 of servers.keys()) {
    if (streamWindow !== DEFAULT_WINDOW) h2.updateSettings({ initialWindowSize: streamWindow });
    if (connectionWindow === DEFAULT_WINDOW) continue;
    h2.on('session', (session: Http2Session) => {
      try {
        session.setLocalWindowSize(connectionWindow);
      } catch {
        // a session that is already closing: nothing to tune
      }
    });
  }
  return true;
}
