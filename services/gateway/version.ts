/** The name `GET /info` and the API documentation give the server. */
export const SERVER_NAME = 'staged-detect';

/** The server's version, as in package.json (test/unit/server-info.test.ts keeps them in step). */
export const SERVER_VERSION = '0.1.0';
