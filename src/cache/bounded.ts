/** A promise bounded in time: its value, 'timeout' or 'error' (never throws). */

/** `p`'s value, or 'timeout' after `ms`, or 'error'. */
export async function bounded<T>(p: Promise<T>, ms: number): Promise<T | 'timeout' | 'error'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => {
    timer = setTimeout(() => r('timeout'), Math.max(1, ms));
  });
  try {
    return await Promise.race([p.catch((): 'error' => 'error'), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
