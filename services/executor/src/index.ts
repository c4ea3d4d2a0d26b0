export { Executor, type ExecutorOptions } from "./executor.js";
export { MAX_CAPACITY, validateRegistration } from "./registration.js";
