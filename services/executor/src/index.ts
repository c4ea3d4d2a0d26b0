export { Executor, type ExecutorOptions } from "./executor.js";
export { validateRegistration } from "./registration.js";
