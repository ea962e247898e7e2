"""WXBizMsgCrypt: ours against wechatpy's WeChatCrypto (an independent implementation)."""

from __future__ import annotations

import pytest
from wechatpy.crypto import WeChatCrypto

from batchmove.wechat.msgcrypt import MsgCrypt, PushError, signature, xml_fields

TOKEN, KEY, APPID = "msg-token", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wxcomponent1"
TICKET_XML = ("<xml><AppId><![CDATA[wxcomponent1]]></AppId><CreateTime>1413192605</CreateTime>"
              "<InfoType><![CDATA[component_verify_ticket]]></InfoType>"
              "<ComponentVerifyTicket><![CDATA[ticket@@@票]]></ComponentVerifyTicket></xml>")


@pytest.mark.parametrize("message", [TICKET_XML, "", "x" * 31, "y" * 32, "中文" * 100])
def test_wechatpy_opens_what_we_seal_and_we_open_what_it_seals(message: str) -> None:
    ours, theirs = MsgCrypt(TOKEN, KEY, APPID), WeChatCrypto(TOKEN, KEY, APPID)
    body, sig = ours.seal_push(message, "1413192605", "nonce1")
    assert theirs.decrypt_message(body, sig, "1413192605", "nonce1") == message
    sealed = theirs.encrypt_message(message, "nonce2", "1413192606")
    fields = xml_fields(sealed)
    assert ours.open_push(sealed.encode(), fields["MsgSignature"], fields["TimeStamp"],
                          fields["Nonce"]) == message


def test_a_forged_signature_another_key_or_appid_is_refused() -> None:
    crypt = MsgCrypt(TOKEN, KEY, APPID)
    body, _ = crypt.seal_push(TICKET_XML, "1", "n")
    with pytest.raises(PushError, match="msg_signature"):
        crypt.open_push(body.encode(), "0" * 40, "1", "n")
    other_key = MsgCrypt(TOKEN, "B" * 43, APPID)
    encrypt = xml_fields(body)["Encrypt"]
    with pytest.raises(PushError):
        other_key.open_push(body.encode(), signature(TOKEN, "1", "n", encrypt), "1", "n")
    with pytest.raises(PushError, match="appid"):
        MsgCrypt(TOKEN, KEY, "wxother").decrypt(encrypt)


@pytest.mark.parametrize("body", [b"not xml", b"<other/>", b"<xml></xml>",
                                  b'<!DOCTYPE x [<!ENTITY a "b">]><xml>&a;</xml>',
                                  b"<xml>" + b"a" * 70_000 + b"</xml>"])
def test_hostile_or_broken_pushes_are_refused(body: bytes) -> None:
    with pytest.raises(PushError):
        MsgCrypt(TOKEN, KEY, APPID).open_push(body, "", "1", "n")


def test_a_bad_encoding_aes_key_is_refused() -> None:
    with pytest.raises(ValueError, match="43 characters"):
        MsgCrypt(TOKEN, "short", APPID)
    assert KEY not in repr(MsgCrypt(TOKEN, KEY, APPID))
