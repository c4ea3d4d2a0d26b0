import { useState } from "preact/hooks";
import { storedKey, storeKey } from "../client.js";

/**
 * Shown when the engine refuses the dashboard's calls for want of a key:
 * asks for one (a read key to look, an admin key to cancel, rerun and
 * send events too), keeps it in this browser, and loads the page again.
 */
export function KeyPrompt() {
  const [key, setKey] = useState("");
  const hadKey = storedKey() !== null;
  return (
    <section class="key-prompt" role="dialog" aria-labelledby="key-prompt-title">
      <h2 id="key-prompt-title">{hadKey ? "The API key was refused" : "This engine needs an API key"}</h2>
      <p>
        {hadKey ? "It is unknown or was revoked. " : ""}
        Give a <code>read</code> key to look at runs, or an <code>admin</code> key to also cancel, rerun and send events. Its
        environment is the one the dashboard shows. <code>stepwise keys create</code> makes one.
      </p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          if (key.trim() === "") return;
          storeKey(key.trim());
          window.location.reload();
        }}
      >
        <input type="password" name="api-key" placeholder="sw_…" autocomplete="off" value={key} onInput={(e) => setKey(e.currentTarget.value)} />
        <button type="submit">Use this key</button>
      </form>
    </section>
  );
}
