/** Why part of a route cannot be expressed for APISIX; the route is skipped with this reason. */
export class UnsupportedMatch extends Error {
  constructor(readonly reason: string, detail: string) {
    super(detail);
  }
}
