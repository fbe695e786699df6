// Prints P-256 (secp256r1) ECDSA test vectors made with Node's crypto
// (OpenSSL), as the EIP-7951 P256VERIFY precompile takes them:
// hash ‖ r ‖ s ‖ x ‖ y, 32 bytes each. Run by appliance/tests/rpc.rs:
//   node tools/p256-vectors.mjs  ->  {"valid": "0x...", "wrong_hash": ..., "wrong_key": ..., "off_curve": ...}
import crypto from "node:crypto";

const { privateKey, publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
const other = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey;
const coordinates = (key) => {
  const jwk = key.export({ format: "jwk" });
  return [Buffer.from(jwk.x, "base64url"), Buffer.from(jwk.y, "base64url")];
};
const message = Buffer.from("fulmen passkey check " + Date.now());
const hash = crypto.createHash("sha256").update(message).digest();
// ieee-p1363: r ‖ s, 32 bytes each.
const signature = crypto.sign("sha256", message, { key: privateKey, dsaEncoding: "ieee-p1363" });
const [x, y] = coordinates(publicKey);
const [ox, oy] = coordinates(other);
const hex = (...parts) => "0x" + Buffer.concat(parts).toString("hex");
const flipped = Buffer.from(hash);
flipped[0] ^= 1;
const offCurve = Buffer.from(y);
offCurve[31] ^= 1;
// EIP-7951's edge cases: s and n - s both verify (no low-s rule); r or s
// of 0 or >= n, the point at infinity, coordinates >= p, and an input of
// another length than 160 bytes do not.
const n = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const p = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
const word = (v) => Buffer.from(v.toString(16).padStart(64, "0"), "hex");
const r = signature.subarray(0, 32);
const s = signature.subarray(32, 64);
const highS = word(n - BigInt("0x" + s.toString("hex")));
const zero = Buffer.alloc(32);
console.log(JSON.stringify({
  valid: hex(hash, signature, x, y),
  high_s: hex(hash, r, highS, x, y),
  wrong_hash: hex(flipped, signature, x, y),
  wrong_key: hex(hash, signature, ox, oy),
  off_curve: hex(hash, signature, x, offCurve),
  r_zero: hex(hash, zero, s, x, y),
  s_zero: hex(hash, r, zero, x, y),
  r_is_n: hex(hash, word(n), s, x, y),
  s_is_n: hex(hash, r, word(n), x, y),
  infinity: hex(hash, signature, zero, zero),
  x_is_p: hex(hash, signature, word(p), y),
  short: hex(hash, signature, x, y.subarray(0, 31)),
  long: hex(hash, signature, x, y, Buffer.alloc(1)),
}));
