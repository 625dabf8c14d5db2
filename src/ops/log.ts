/**
 * Structured JSON logs (pino) on stdout, one object per line. Level from LOG_LEVEL (trace, debug,
 * info, warn, error, fatal, silent; an unknown value falls back to info with a warning).
 * Never log prompt text or raw API keys: decision lines carry the tenant as a 12-hex hash only.
 */
import pino from 'pino';
import { settings } from '../settings.js';

export type Logger = pino.Logger;

export function createLogger(level = settings().logLevel, dest?: pino.DestinationStream): Logger {
  const lvl = level.toLowerCase();
  const known = lvl === 'silent' || lvl in pino.levels.values;
  const log = pino(
    {
      name: 'tollgate',
      level: known ? lvl : 'info',
      base: { name: 'tollgate' },
      // Defence in depth: these never reach a log call, but if one ever did, it is censored.
      redact: {
        paths: [
          'headers.authorization',
          'headers["x-api-key"]',
          'headers["api-key"]',
          'body',
          'messages',
          'prompt',
        ],
        censor: '[redacted]',
      },
    },
    dest ?? pino.destination({ sync: false }),
  );
  if (!known) log.warn({ LOG_LEVEL: level }, 'unknown LOG_LEVEL; using info');
  return log;
}
