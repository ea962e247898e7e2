"""WeChat's message encryption (WXBizMsgCrypt), as a third-party platform's pushes use it.

WeChat pushes `component_verify_ticket` every 10 minutes as XML whose `<Encrypt>` is

    base64(AES-256-CBC(key, iv = key[:16], PKCS#7 to 32 bytes,
                       16 random bytes + len(msg) as 4 bytes big-endian + msg + appid))

with key = base64(EncodingAESKey + "="), and the query string carries
`msg_signature = sha1(sorted(token, timestamp, nonce, encrypt) joined)`. `open_push` checks the
signature, decrypts, and checks the appid inside; `seal_push` does the reverse (the sandbox
pushes with it). wechatpy's `WeChatCrypto` is the independent reference the tests compare with.

The AES key and the platform's message token are secrets: they never enter a message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 32  # WeChat pads to 32 bytes (PKCS#7 with k = 32), not AES's 16
MAX_PUSH_BYTES = 64 * 1024  # a ticket push is under 1 kB


class PushError(ValueError):
    """A push that is not a valid, correctly signed message for this platform."""


def _aes_key(encoding_aes_key: str) -> bytes:
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(encoding_aes_key) != 43 or len(key) != 32:
        raise ValueError("an EncodingAESKey is 43 characters of base64 (32 bytes)")
    return key


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """`msg_signature`: sha1 of the four strings sorted and joined."""
    return hashlib.sha1("".join(sorted((token, timestamp, nonce, encrypt))).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MsgCrypt:
    """One platform's keys: the message token, the EncodingAESKey and its appid."""

    token: str = field(repr=False)
    encoding_aes_key: str = field(repr=False)
    appid: str

    def __post_init__(self) -> None:
        _aes_key(self.encoding_aes_key)

    def _cipher(self) -> Cipher[modes.CBC]:
        key = _aes_key(self.encoding_aes_key)
        return Cipher(algorithms.AES(key), modes.CBC(key[:16]))

    def encrypt(self, message: str, random16: bytes | None = None) -> str:
        """The `<Encrypt>` text of `message`."""
        body = message.encode()
        plain = (random16 or os.urandom(16)) + struct.pack(">I", len(body)) + body \
            + self.appid.encode()
        pad = BLOCK - len(plain) % BLOCK
        encryptor = self._cipher().encryptor()
        sealed = encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()
        return base64.b64encode(sealed).decode("ascii")

    def decrypt(self, encrypt: str) -> str:
        """The message inside `<Encrypt>`; PushError if it is not one for this appid."""
        try:
            sealed = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError):
            raise PushError("Encrypt is not base64") from None
        if not sealed or len(sealed) % 16:
            raise PushError("Encrypt is not a whole number of AES blocks")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(sealed) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad or len(plain) < 20 + pad:
            raise PushError("the message does not decrypt with this EncodingAESKey")
        plain = plain[:-pad]
        (length,) = struct.unpack(">I", plain[16:20])
        message, appid = plain[20:20 + length], plain[20 + length:]
        if len(message) != length or appid.decode("utf-8", "replace") != self.appid:
            raise PushError("the message is not for this platform's appid")
        try:
            return message.decode()
        except UnicodeDecodeError:
            raise PushError("the message is not UTF-8") from None

    def seal_push(self, message: str, timestamp: str, nonce: str) -> tuple[str, str]:
        """(the XML body WeChat POSTs, its msg_signature) for `message`."""
        encrypt = self.encrypt(message)
        xml = (f"<xml><AppId><![CDATA[{self.appid}]]></AppId>"
               f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>")
        return xml, signature(self.token, timestamp, nonce, encrypt)

    def open_push(self, body: bytes, msg_signature: str, timestamp: str, nonce: str) -> str:
        """The decrypted message of a push, once its signature is checked."""
        encrypt = xml_fields(body).get("Encrypt", "")
        if not encrypt:
            raise PushError("the push has no Encrypt element")
        expected = signature(self.token, timestamp, nonce, encrypt)
        if not hmac.compare_digest(expected, msg_signature):
            raise PushError("msg_signature does not match (wrong token, or not from WeChat)")
        return self.decrypt(encrypt)


def xml_fields(body: bytes | str) -> dict[str, str]:
    """The text of each child of a WeChat `<xml>` message (flat, as WeChat sends them).
    Entities and DTDs are refused before parsing: WeChat never sends them."""
    raw = body.encode() if isinstance(body, str) else body
    if len(raw) > MAX_PUSH_BYTES:
        raise PushError(f"the push is over {MAX_PUSH_BYTES} bytes")
    if b"<!" in raw.replace(b"<![CDATA[", b""):
        raise PushError("the push holds a DTD or an entity declaration")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError:
        raise PushError("the push is not XML") from None
    if root.tag != "xml":
        raise PushError("the push is not a WeChat <xml> message")
    return {child.tag: (child.text or "").strip() for child in root}
