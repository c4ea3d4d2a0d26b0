// Written by `npm run set-version`, with the version in sdk-ts/package.json;
// a test fails when the two differ.

/** The version of this SDK, which a worker reports when it registers. */
export const SDK_VERSION = "0.1.0";
