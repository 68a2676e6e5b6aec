import pytest

from freeze_omni.data.qa.known import contains_answer, known_answers, parse_number


@pytest.mark.parametrize("question,expected", [
    ("What is the capital of France?", ["Paris"]),
    ("Which city is the capital of Peru?", ["Lima"]),
    ("Which country has Lima as its capital?", ["Peru"]),
    ("What is 12 times three?", ["36", "thirty-six", "thirty six"]),
    ("How much is forty two minus 2?", ["40", "forty"]),
    ("Can you tell me what 6 divided by 3 is?", ["2", "two"]),
    ("What is the square root of 144?", ["12", "twelve"]),
    ("What comes after ninety nine?", ["100", "one hundred"]),
    ("Which month is the 3rd month of the year?", ["March"]),
    ("What is half of 7?", None),
    ("Tell me about Peru.", None),
    ("How many people live there?", None),
])
def test_known_answers(question, expected):
    assert known_answers(question) == expected


def test_number_words_and_whole_word_match():
    assert parse_number("three hundred and five") == 305 and parse_number("1,250") == 1250
    assert parse_number("banana") is None
    assert contains_answer("It is forty-two.", ["42", "forty-two"])
    assert not contains_answer("The answer is 42.", ["4"])
    assert contains_answer("The capital of France is Paris.", ["paris"])
