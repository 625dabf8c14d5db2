/** Structured JSON logs (pino). Level from LOG_LEVEL. Never log prompt text or raw API keys. */
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(level = process.env.LOG_LEVEL || 'info', dest?: pino.DestinationStream): Logger {
  return pino(
    { name: 'tollgate', level, base: { name: 'tollgate' } },
    dest ?? pino.destination({ sync: false }),
  );
}
