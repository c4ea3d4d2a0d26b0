export { type DevOptions, type Running, type ServiceName, startDev, startService } from "./engine.js";
