"""Reply time: a placeholder the model wrote is filled from what the conversation knows, or written out of the
reply; either way no placeholder reaches the customer."""

from __future__ import annotations

import pytest

from collector.pii import KnownValues, PiiType, fill_placeholders

TABLE = {"<PERSON_1>": "crystal minh", "<ORDER_ID_1>": "5545781356", "<EMAIL_1>": "cminh730@email.com"}
PLATFORM = KnownValues(name="Albert Sanders", email="asanders1@email.com", phone="(383) 730-0068")


@pytest.mark.parametrize(
    ("reply", "placeholders", "known", "expected"),
    [
        # filled from the conversation's own table; a lower-case name is written properly, a greeting takes the
        # first name
        ("Thanks, <PERSON_1>!", TABLE, None, "Thanks, Crystal!"),
        ("I have found <PERSON_1>'s order.", TABLE, None, "I have found Crystal Minh's order."),
        ("Your order <ORDER_ID_1> has shipped.", TABLE, None, "Your order 5545781356 has shipped."),
        ("I sent the label to <EMAIL_1>.", TABLE, None, "I sent the label to cminh730@email.com."),
        # nothing in the table: the platform's contact fills the customer's name, e-mail and phone
        ("Hi <PERSON_1>, how can I help?", {}, PLATFORM, "Hi Albert, how can I help?"),
        ("We'll text <PHONE_1> when it ships.", {}, PLATFORM, "We'll text (383) 730-0068 when it ships."),
        ("A receipt went to <EMAIL_2>.", {}, PLATFORM, "A receipt went to asanders1@email.com."),
        # no value anywhere: the reply is rewritten around it
        ("Thanks, <PERSON_1>!", {}, None, "Thanks!"),
        ("Hi <PERSON_1>, how can I help?", {}, None, "Hi, how can I help?"),
        ("Thank you <PERSON_2>. Let me check.", TABLE, None, "Thank you. Let me check."),
        ("<PERSON_1>, I have updated it.", {}, None, "I have updated it."),
        ("I understand, <PERSON_1>. One moment.", {}, None, "I understand. One moment."),
        ("Your order <ORDER_ID_2> has shipped.", TABLE, None, "Your order has shipped."),
        ("Your order number <ORDER_ID_1> is on its way!", {}, None, "Your order is on its way!"),
        ("I see the account (<ACCOUNT_ID_1>) is locked.", {}, None, "I see the account is locked."),
        ("I emailed <EMAIL_1> the label. Have a nice day!", {}, None, "Have a nice day!"),
        ("Sorry for the wait. <USERNAME_1> is now unlocked. Anything else?", {}, None,
         "Sorry for the wait. Anything else?"),
        # what a model makes of placeholders counts too: no number, square brackets, lower case, no ">"
        ("Thanks, <PERSON>!", {}, None, "Thanks!"),
        ("Your order [ORDER_ID] has shipped.", {}, None, "Your order has shipped."),
        ("Hello <person_1>, welcome back.", {}, None, "Hello, welcome back."),
        ("It ships to <ADDRESS_1 tomorrow. Thanks!", {}, None, "Thanks!"),
        # a reply with nothing to fill stays exactly as it is
        ("Have you tried plugging it in?", TABLE, PLATFORM, "Have you tried plugging it in?"),
        ("Use <b>bold</b> and <NAME_1> as you like.", {}, None, "Use <b>bold</b> and <NAME_1> as you like."),
    ],
)
def test_placeholders_are_filled_or_written_out(reply: str, placeholders: dict, known: KnownValues | None,
                                                expected: str) -> None:
    filled = fill_placeholders(reply, placeholders, known)
    assert filled.text == expected
    assert "<PERSON" not in filled.text.upper() and "[ORDER_ID" not in filled.text


def test_a_reply_that_is_only_a_placeholder_sentence_comes_back_empty() -> None:
    filled = fill_placeholders("Your username is <USERNAME_1>.", {}, None)
    assert filled.text == "" and filled.removed == ["<USERNAME_1>"]


def test_what_was_filled_and_removed_is_reported() -> None:
    filled = fill_placeholders("Thanks, <PERSON_1>! I sent it to <EMAIL_3>.", TABLE, None)
    assert filled.filled == {"<PERSON_1>": "Crystal"}
    assert filled.removed == ["<EMAIL_3>"]
    assert filled.text == "Thanks, Crystal!"


def test_a_single_value_of_a_type_fills_an_unnumbered_placeholder() -> None:
    assert fill_placeholders("Order <ORDER_ID> is late.", TABLE).text == "Order 5545781356 is late."
    known = KnownValues(others=((PiiType.ACCOUNT_ID, "4VEJCYVP8U"),))
    assert fill_placeholders("Account <ACCOUNT_ID_1> is open.", {}, known).text == "Account 4VEJCYVP8U is open."


SERVED = [
    # the conversation's own values, filled in, stay
    ("Thanks, <PERSON_1>! Order <ORDER_ID_1> ships today.", "Thanks, Crystal! Order 5545781356 ships today."),
    # what cannot be filled is written out with the words around it
    ("Thanks, <PERSON_2>! Your order <ORDER_ID_2> has shipped. Anything else?",
     "Thanks! Your order has shipped. Anything else?"),
    # the company's own text passes untouched
    ("Write to support@gadgetcorp.com any time.", "Write to support@gadgetcorp.com any time."),
]


@pytest.mark.parametrize(("reply", "expected"), SERVED)
def test_a_served_reply_keeps_the_values_the_conversation_knows(reply: str, expected: str) -> None:
    """The live path (`plugin.reply_guard`, what the service runs on every draft before anyone sees it)."""
    from plugin.reply_guard import ReplyGuard

    assert ReplyGuard(TABLE, None).whole(reply) == expected


@pytest.mark.parametrize(("reply", "expected"), SERVED)
def test_a_streamed_reply_is_the_whole_reply_a_sentence_at_a_time(reply: str, expected: str) -> None:
    from plugin.reply_guard import ReplyGuard

    streamed = ReplyGuard(TABLE, None)
    pieces = [streamed.feed(reply[start:start + 3]) for start in range(0, len(reply), 3)]
    assert "".join(pieces) + streamed.finish() == expected
