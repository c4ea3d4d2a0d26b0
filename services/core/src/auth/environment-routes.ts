import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";

/** What a service passes to its Connect server: registers implementations on a router. */
export type Routes = (router: ConnectRouter) => void;

type Method = (req: unknown, ctx: HandlerContext) => unknown;

/** The implementations of an environment's RPCs, by service type name. */
export type Implementations = Map<string, Record<string, Method>>;

/** The implementations `routes` registers, by service type name, without a server. */
export function implementationsOf(routes: Routes): Implementations {
  const impls: Implementations = new Map();
  const capturing = {
    service(desc: DescService, impl: Record<string, Method>) {
      impls.set(desc.typeName, impl);
      return capturing;
    },
  };
  routes(capturing as unknown as ConnectRouter);
  return impls;
}

/**
 * Routes that hand each call of `services` to the implementations of the
 * caller's environment, which `implementationsFor` finds (or starts) from
 * the call's context: at once when the environment runs already (the call
 * goes straight to its implementation, no extra step per message), else
 * once it started (unary calls wait; streams begin then).
 */
export function environmentRoutes(
  services: readonly DescService[],
  implementationsFor: (ctx: HandlerContext) => Implementations | Promise<Implementations>,
): Routes {
  return (router) => {
    for (const desc of services) {
      const impl: Record<string, Method> = {};
      for (const m of desc.methods) {
        const pick = (found: Implementations): Method => {
          const fn = found.get(desc.typeName)?.[m.localName];
          if (!fn) throw new Error(`${desc.typeName}.${m.name} has no implementation in this environment`);
          return fn;
        };
        const unary = m.methodKind === "unary" || m.methodKind === "client_streaming";
        impl[m.localName] = (req, ctx) => {
          const found = implementationsFor(ctx);
          if (!(found instanceof Promise)) return pick(found)(req, ctx);
          return unary
            ? found.then((f) => pick(f)(req, ctx))
            : (async function* () {
                yield* pick(await found)(req, ctx) as AsyncIterable<unknown>;
              })();
        };
      }
      router.service(desc, impl as never);
    }
  };
}
