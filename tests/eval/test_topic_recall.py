"""The topic recall of `eval qa`: how many of the question's content words an answer repeats."""

from freeze_omni.eval.qa import content_words, topic_recall


def test_function_words_carry_no_topic():
    assert content_words("What is the capital of France?") == {"capital", "france"}


def test_the_shape_of_a_question_without_its_words_scores_half():
    q = "What is the capital of France?"
    assert topic_recall(q, "The capital of France is Paris.") == 1.0
    assert topic_recall(q, "The capital of the Southeastern United States is New Orleans.") == 0.5
    assert topic_recall(q, "I like turtles.") == 0.0


def test_word_forms_match_on_their_first_five_letters():
    assert topic_recall("Which countries border Chile?", "Chile borders a country.") == 1.0
