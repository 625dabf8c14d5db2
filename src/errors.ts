/** Coded errors: every failure a user can see carries a stable code. */
export class TollgateError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'TollgateError';
  }
}

/** A configuration problem, naming the file, the field path and what was expected. */
export class ConfigError extends TollgateError {
  constructor(
    readonly problems: string[],
    readonly file?: string,
  ) {
    super(
      'TG_CONFIG_INVALID',
      `invalid configuration${file ? ` in ${file}` : ''}:\n${problems.map((p) => `  - ${p}`).join('\n')}`,
    );
    this.name = 'ConfigError';
  }
}

export class StoreTimeoutError extends TollgateError {
  /**
   * Settles once the timed-out call itself does: true if the store replied after all (late), false if
   * it failed. Lets the breaker tell a slow store from a dead one.
   */
  late?: Promise<boolean>;
  constructor(ms: number) {
    super('TG_STORE_TIMEOUT', `store call exceeded ${ms} ms`);
  }
}

export class BreakerOpenError extends TollgateError {
  constructor() {
    super('TG_BREAKER_OPEN', 'circuit breaker open: store calls suspended');
  }
}

/** The in-memory store is at store.memory_max_keys and no entry can be dropped without losing spend. */
export class StoreFullError extends TollgateError {
  constructor(max: number) {
    super('TG_STORE_FULL', `in-memory store full (${max} keys, none idle enough to evict)`);
  }
}

/**
 * The store is answering, but not this call within the overload budget (server.overload_budget): our
 * own backlog, not an outage. Never failed open: the check is shed with a retryable 503 `overloaded`.
 * `stage`: `queued` = never sent (nothing was debited); `sent` = already written to the store, which
 * will still run it (a call that fitted is debited though it was refused).
 */
export class OverloadedError extends TollgateError {
  constructor(readonly stage: 'queued' | 'sent') {
    super('TG_OVERLOADED', `store call not answered within the overload budget (${stage})`);
  }
}
