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
console.log(JSON.stringify({
  valid: hex(hash, signature, x, y),
  wrong_hash: hex(flipped, signature, x, y),
  wrong_key: hex(hash, signature, ox, oy),
  off_curve: hex(hash, signature, x, offCurve),
}));
