import ipaddr from 'ipaddr.js';

/**
 * Which addresses an image URL (or a webhook URL) may reach. By default only global unicast addresses: never
 * loopback, private, link-local (where cloud metadata services live), carrier-grade NAT,
 * multicast, unspecified, broadcast, documentation, benchmarking or reserved ranges, so a client
 * cannot make the server fetch from inside its own network (server-side request forgery).
 * Checked on the resolved address of every connection, redirects included, so a DNS name cannot
 * point the fetch inward.
 *
 * The ranges are ipaddr.js's classification (`range()`, from the IANA special-purpose address
 * registries), used as an allowlist: only its `unicast` class passes, so a range it learns to
 * name in a later version is refused rather than let through. IPv6 addresses that carry an IPv4
 * address (IPv4-mapped, NAT64 64:ff9b::/96, 6to4, Teredo) are judged by the IPv4 address they
 * reach as well.
 */

type Address = ipaddr.IPv4 | ipaddr.IPv6;

// Global unicast IPv6 (RFC 4291 §2.4): everything else ipaddr.js calls `unicast` (for example
// the deprecated IPv4-compatible ::a.b.c.d, or unassigned space) is not an internet address.
const GLOBAL_UNICAST_V6 = ipaddr.IPv6.parseCIDR('2000::/3');

/**
 * True when `address`, an IP literal in any notation ipaddr.js reads (dotted, octal, hex or
 * shortened IPv4 such as `0x7f.1`; IPv6 with or without a zone id `%eth0`, or with an embedded
 * dotted IPv4), is a global unicast internet address an image URL may reach. False for anything
 * else, including text that is not an IP address.
 */
export function isPublicAddress(address: string): boolean {
  let parsed: Address;
  try {
    parsed = ipaddr.parse(canonicalIPv6(address));
  } catch {
    return false;
  }
  return isPublic(parsed);
}

/**
 * An IPv6 literal as the URL standard writes it (`::8.8.8.8` → `::808:808`); other text as it
 * is. ipaddr.js reads any `::a.b.c.d` as IPv4-mapped, which would judge the deprecated
 * IPv4-compatible form by its IPv4 address; the canonical form has no such ambiguity.
 */
function canonicalIPv6(address: string): string {
  if (!address.includes(':') || !address.includes('.')) return address;
  const zone = address.indexOf('%');
  const bare = zone < 0 ? address : address.slice(0, zone);
  try {
    return (
      new URL(`http://[${bare}]/`).hostname.slice(1, -1) + (zone < 0 ? '' : address.slice(zone))
    );
  } catch {
    return address;
  }
}

function isPublic(ip: Address): boolean {
  if (ip.kind() === 'ipv4') return ip.range() === 'unicast';
  const v6 = ip as ipaddr.IPv6;
  // A zone id only names the interface of a link-local address; the address decides.
  const embedded = embeddedIPv4(v6);
  if (embedded !== undefined) return embedded.length > 0 && embedded.every(isPublic);
  return v6.range() === 'unicast' && v6.match(GLOBAL_UNICAST_V6);
}

/**
 * The IPv4 addresses an IPv6 address reaches through a translation or tunnel mechanism: [] when
 * it is such a mechanism but none of its addresses may be reached, undefined when it is not one.
 */
function embeddedIPv4(ip: ipaddr.IPv6): Address[] | undefined {
  const p = ip.parts;
  const v4 = (hi: number, lo: number) => new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
  switch (ip.range() as string) {
    // ::ffff:a.b.c.d (RFC 4291): the IPv4 address itself.
    case 'ipv4Mapped':
      return [v4(p[6]!, p[7]!)];
    // 64:ff9b::a.b.c.d (RFC 6052): the well-known NAT64 prefix reaches the IPv4 address, which is
    // how hosts on an IPv6-only network with DNS64 see every IPv4 site. The local-use prefix
    // 64:ff9b:1::/48 (RFC 8215) is operator-defined, so it reaches nothing an image URL may.
    case 'rfc6052':
      return p[2] === 0 && p[3] === 0 && p[4] === 0 && p[5] === 0 ? [v4(p[6]!, p[7]!)] : [];
    // 2002:AABB:CCDD::/48 (RFC 3056): the 6to4 relay of IPv4 address AA.BB.CC.DD.
    case '6to4':
      return [v4(p[1]!, p[2]!)];
    // 2001:0:SSSS:SSSS:flags:port:CCCC:CCCC (RFC 4380): the Teredo server, and the client's
    // address stored inverted.
    case 'teredo':
      return [v4(p[2]!, p[3]!), v4(~p[6]! & 0xffff, ~p[7]! & 0xffff)];
    // ::ffff:0:a.b.c.d (RFC 6145, IPv4-translated): not routed on the internet.
    case 'rfc6145':
      return [];
    default:
      return undefined;
  }
}
