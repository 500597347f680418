// In-browser verification of a ledger entry, with the rules of ledger-verify
// (ledger/receipt.py, ledger/note.py, ledger/checkpoint.py, ledger/merkle.py):
// C2SP signed-note Ed25519 signature on the checkpoint by the pinned log key,
// tlog-checkpoint body, RFC 9162 leaf hash and inclusion proof, entry index.
// WebCrypto only: SHA-256 and Ed25519 (recent Chromium, Firefox and Safari).
"use strict";

const PIN = "sandbox.logVerifierKey";
const SAVED = "sandbox.lastCheckpoint";
const enc = new TextEncoder();

function fail(msg) { throw new Error(msg); }

function b64(text) {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) fail("bad base64");
  const bin = atob(text);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function hex(bytes) { return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""); }

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function equal(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }

async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)); }

// signed-note "Verifier keys": name+hexid+base64(0x01 || 32-byte Ed25519 key).
async function parseVkey(text) {
  const parts = text.trim().split("+");
  if (parts.length < 3) fail("the verifier key must be name+keyid+base64");
  const name = parts[0], hexid = parts[1], raw = b64(parts.slice(2).join("+"));
  if (!/^[^\s+]+$/.test(name)) fail("bad key name");
  if (raw.length !== 33 || raw[0] !== 0x01) fail("not an Ed25519 (0x01) note key");
  const id = (await sha256(concat(enc.encode(name + "\n"), raw))).slice(0, 4);
  if (hex(id) !== hexid.toLowerCase()) fail("the key id does not match its name and key");
  return { name, id, pub: raw.slice(1) };
}

// signed-note "Format" and "Signatures": every line by this key must verify, and one must.
async function verifyNote(note, key) {
  if (/[\r\x00-\x09\x0b-\x1f]/.test(note)) fail("the note has control characters");
  const cut = note.lastIndexOf("\n\n");
  if (cut < 0 || !note.endsWith("\n")) fail("the note has no signature block");
  const body = note.slice(0, cut + 1);
  const lines = note.slice(cut + 2).split("\n").filter((l) => l !== "");
  const pub = await crypto.subtle.importKey("raw", key.pub, { name: "Ed25519" }, false, ["verify"]);
  let found = false;
  for (const line of lines) {
    if (!line.startsWith("\u2014 ")) fail("a signature line does not start with an em dash");
    const fields = line.slice(2).split(" ");
    if (fields.length !== 2 || !fields[0]) fail("a signature line is not '— name base64'");
    const raw = b64(fields[1]);
    if (raw.length < 5) fail("a signature is too short");
    if (fields[0] !== key.name || !equal(raw.slice(0, 4), key.id)) continue;
    const ok = await crypto.subtle.verify({ name: "Ed25519" }, pub, raw.slice(4), enc.encode(body));
    if (!ok) fail("a signature by " + key.name + " on the checkpoint fails to verify");
    found = true;
  }
  if (!found) fail("no valid signature by " + key.name + " on the checkpoint");
  return body;
}

// tlog-checkpoint: origin, decimal size without leading zeroes, base64 32-byte root.
function parseCheckpoint(body) {
  const lines = body.split("\n");
  if (lines.length < 4 || lines[lines.length - 1] !== "") fail("the checkpoint needs origin, size and root");
  if (!lines[0]) fail("the checkpoint origin is empty");
  if (!/^(0|[1-9][0-9]{0,19})$/.test(lines[1])) fail("the checkpoint size is not decimal");
  const root = b64(lines[2]);
  if (root.length !== 32) fail("the checkpoint root is not a 32-byte hash");
  return { origin: lines[0], size: BigInt(lines[1]), root };
}

// RFC 9162 §2.1.3.2, as ledger/merkle.py::verify_inclusion.
async function inclusionRoot(leaf, index, size, proof) {
  if (index < 0n || index >= size) fail("the index is outside the tree");
  let inner = 0;
  for (let x = index ^ (size - 1n); x > 0n; x >>= 1n) inner += 1;
  let border = 0;
  for (let x = index >> BigInt(inner); x > 0n; x >>= 1n) border += Number(x & 1n);
  if (proof.length !== inner + border) fail("the inclusion proof has the wrong length");
  const one = new Uint8Array([1]);
  let r = leaf, bits = index;
  for (let i = 0; i < proof.length; i++) {
    const p = proof[i];
    if (p.length !== 32) fail("a proof hash is not 32 bytes");
    if (i < inner) {
      r = await sha256((bits & 1n) ? concat(one, p, r) : concat(one, r, p));
      bits >>= 1n;
    } else {
      r = await sha256(concat(one, p, r));
    }
  }
  return r;
}

// RFC 9162 §2.1.4.2, as ledger/merkle.py::verify_consistency.
async function verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof) {
  const one = new Uint8Array([1]);
  if (proof.some((p) => p.length !== 32)) fail("a proof hash is not 32 bytes");
  if (oldSize > newSize) fail("rollback: the log is smaller than the saved checkpoint");
  if (oldSize === newSize) {
    if (proof.length) fail("a proof between equal sizes must be empty");
    if (!equal(oldRoot, newRoot)) fail("same size, different roots: the log forked");
    return;
  }
  if (oldSize === 0n) {
    if (proof.length) fail("a proof from the empty tree must be empty");
    return;
  }
  if (!proof.length) fail("empty consistency proof");
  const path = [...proof];
  if ((oldSize & (oldSize - 1n)) === 0n) path.unshift(oldRoot);
  let fn = oldSize - 1n, sn = newSize - 1n;
  while (fn & 1n) { fn >>= 1n; sn >>= 1n; }
  let fr = path[0], sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0n) fail("consistency proof too long");
    if ((fn & 1n) || fn === sn) {
      fr = await sha256(concat(one, c, fr));
      sr = await sha256(concat(one, c, sr));
      if (!(fn & 1n)) {
        while (fn && !(fn & 1n)) { fn >>= 1n; sn >>= 1n; }
      }
    } else {
      sr = await sha256(concat(one, sr, c));
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) fail("consistency proof too short");
  if (!equal(fr, oldRoot) || !equal(sr, newRoot)) fail("the consistency proof does not match the roots");
}

// The log shown now extends the checkpoint this browser saved last (no rollback, no fork).
async function checkSaved(box, key, cp, note) {
  const saved = localStorage.getItem(SAVED);
  let before = null;
  if (saved) {
    const old = parseCheckpoint(await verifyNote(saved, key));
    before = old.size;
    if (old.origin !== cp.origin) fail("the saved checkpoint is of another log");
    let proof = [];
    if (old.size !== 0n && old.size < cp.size) {
      const url = box.dataset.consistencyUrl + "?old=" + old.size + "&new=" + cp.size;
      const answer = await fetch(url, { credentials: "same-origin" });
      if (!answer.ok) fail("HTTP " + answer.status);
      proof = (await answer.json()).proof.map(b64);
    }
    await verifyConsistency(old.size, cp.size, old.root, cp.root, proof);
  }
  localStorage.setItem(SAVED, note);
  return before;
}

async function verifyReceipt(receipt, vkeyText) {
  if (receipt.format !== "sandbox-ledger-receipt/v1") fail("not a sandbox-ledger-receipt/v1");
  const key = await parseVkey(vkeyText);
  const cp = parseCheckpoint(await verifyNote(receipt.checkpoint, key));
  const index = BigInt(receipt.index), size = BigInt(receipt.tree_size);
  if (cp.size !== size) fail("the receipt's tree size differs from the checkpoint's");
  const entry = b64(receipt.entry);
  const leaf = await sha256(concat(new Uint8Array([0]), entry));
  if (receipt.leaf_hash !== undefined && receipt.leaf_hash !== hex(leaf)) fail("the leaf hash does not match the entry");
  const root = await inclusionRoot(leaf, index, size, receipt.inclusion_proof.map(b64));
  if (!equal(root, cp.root)) fail("the inclusion proof does not lead to the signed root");
  const decoded = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(entry));
  if (BigInt(decoded.index) !== index) fail("the entry names another index");
  return { cp, key, decoded };
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("verify");
  if (!box) return;
  const input = document.getElementById("vkey");
  const source = document.getElementById("vkey-source");
  const result = document.getElementById("verify-result");
  const pinned = localStorage.getItem(PIN);
  input.value = pinned || box.dataset.serverVkey;
  source.textContent = pinned ? source.dataset.pinned : source.dataset.server;
  document.getElementById("pin-key").addEventListener("click", () => {
    localStorage.setItem(PIN, input.value.trim());
    source.textContent = source.dataset.pinned;
  });
  document.getElementById("verify-button").addEventListener("click", async () => {
    result.className = "";
    result.textContent = result.dataset.busy;
    try {
      const answer = await fetch(box.dataset.receiptUrl, { credentials: "same-origin" });
      if (!answer.ok) fail("HTTP " + answer.status);
      const receipt = await answer.json();
      const { cp, key } = await verifyReceipt(receipt, input.value);
      result.className = "ok";
      result.dataset.state = "verified";
      result.textContent = result.dataset.ok + " (" + cp.origin + ", " + cp.size + ")";
      const consistency = document.getElementById("consistency-result");
      try {
        const before = await checkSaved(box, key, cp, receipt.checkpoint);
        consistency.className = "ok";
        consistency.dataset.state = before === null ? "saved" : "consistent";
        consistency.textContent = before === null ? consistency.dataset.first
          : consistency.dataset.ok + " (" + before + " → " + cp.size + ")";
      } catch (e) {
        consistency.className = "error";
        consistency.dataset.state = "failed";
        consistency.textContent = consistency.dataset.fail + " " + e.message;
      }
    } catch (e) {
      result.className = "error";
      result.dataset.state = "failed";
      const noCrypto = e && (e.name === "NotSupportedError" || e.name === "DataError");
      result.textContent = noCrypto ? result.dataset.nocrypto : result.dataset.fail + " " + e.message;
    }
  });
});
