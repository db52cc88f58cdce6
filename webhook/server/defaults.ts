/** The webhook's HTTPS port; kept apart from the server so the CLI can show it without loading Fastify. */
export const DEFAULT_PORT = 9443;
