"""Every rule of the official VQA answer normalisation, on hand-worked strings."""
from tinygpt.evaluation.metrics.vqa_normalize import (
    CONTRACTIONS, VIZWIZ_CONTRACTIONS, normalize_answer, process_digit_article, process_punctuation)


def test_punctuation_not_touching_a_space_becomes_a_space():
    assert process_punctuation("t-shirt") == "t shirt"
    assert process_punctuation("red,blue") == "red blue"
    assert process_punctuation("yes!") == "yes "


def test_punctuation_touching_a_space_is_deleted():
    # "(" follows a space -> deleted; ")" touches none -> space
    assert process_punctuation("red (dark)") == "red dark "
    assert process_punctuation("red, blue") == "red blue"
    assert process_punctuation("x - y") == "x  y"


def test_digit_comma_digit_deletes_every_listed_character():
    assert process_punctuation("1,000") == "1000"
    assert process_punctuation("well-known") == "well known"
    # the digit-comma anywhere switches the hyphen from "space" to "delete" too
    assert process_punctuation("well-known 1,000") == "wellknown 1000"


def test_unlisted_characters_survive():
    assert process_punctuation("it's 50% a:b") == "it's 50% a:b"


def test_period_removed_unless_a_digit_follows():
    assert process_punctuation("3.5") == "3.5"
    assert process_punctuation(".5") == ".5"
    assert process_punctuation("1.") == "1"
    assert process_punctuation("st. louis") == "st louis"
    assert process_punctuation("yes.") == "yes"


def test_period_strip_removes_at_most_32():
    # the official code passes re.UNICODE (== 32) as sub's count
    assert process_punctuation("." * 40) == "." * 8


def test_number_words_become_digits():
    assert process_digit_article("Two Dogs") == "2 dogs"
    assert process_digit_article("none") == "0"
    assert process_digit_article("zero ten") == "0 10"
    assert process_digit_article("eleven") == "eleven"


def test_articles_are_dropped():
    assert process_digit_article("a dog") == "dog"
    assert process_digit_article("The Cat") == "cat"
    assert process_digit_article("an apple on the table") == "apple on table"


def test_contractions_expand_and_capitalised_keys_never_match():
    assert process_digit_article("dont know") == "don't know"
    assert process_digit_article("isnt") == "isn't"
    assert process_digit_article("yall'll") == "y'all'll"
    assert process_digit_article("Im") == "im"  # key "Im" cannot match the lower-cased word


def test_full_normalisation_order():
    assert normalize_answer("  The Two\tdogs!\n") == "2 dogs"
    assert normalize_answer("A 1,000 dollars.") == "1000 dollars"


def test_vizwiz_table_uses_typographic_apostrophes_mostly():
    assert len(VIZWIZ_CONTRACTIONS) == len(CONTRACTIONS)
    assert VIZWIZ_CONTRACTIONS["dont"] == "don\u2019t"
    assert VIZWIZ_CONTRACTIONS["cant"] == "can't"
    assert VIZWIZ_CONTRACTIONS["weve"] == "we've"
    assert VIZWIZ_CONTRACTIONS["couldn'tve"] == "couldn\u2019t\u2019ve"
    assert "couldnt've" not in VIZWIZ_CONTRACTIONS and "couldnt\u2019ve" in VIZWIZ_CONTRACTIONS
    assert normalize_answer("dont", "vizwiz") == "don\u2019t"


def test_digits_are_ascii_only_as_in_the_python_2_script():
    # Python 2 compiles `\d` without re.UNICODE: full-width digits are ordinary characters there.
    assert process_punctuation("3.5") == "3.5"  # an ASCII digit follows the period: kept
    assert process_punctuation("\uff13.\uff15") == "\uff13\uff15"  # '３.５': no digit follows, removed
    assert process_punctuation("1,000 cats") == "1000 cats"  # digit-comma-digit: every listed char deleted
    assert process_punctuation("\uff11,\uff10\uff10\uff10") == "\uff11 \uff10\uff10\uff10"  # '１,０００': a space
