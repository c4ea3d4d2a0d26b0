/** What a failed test's report needs of a running stack (test/support/failure-logs.ts). */
export interface LiveStack {
  readonly prefix: string;
  serviceLogs(): Array<{ name: string; lines: readonly string[] }>;
}

/** The stacks started and not yet stopped in this test file. */
export const liveStacks = new Set<LiveStack>();

/** Stacks stopped since the last test ended (a test that stops its stack in a finally), read and cleared after each test. */
export const stoppedStacks: LiveStack[] = [];
