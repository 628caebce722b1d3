"""Training progress text is plain, so every transport shows it as it is."""

from bot.jobs.progress_message import running_text


def test_progress_text_carries_no_markup() -> None:
    assert running_text("sample", "j1", "train", 0.5) == (
        "Training @sample ███████░░░░░ 55% · fine-tuning (job j1)"
    )


def test_progress_text_names_each_account_of_a_combined_model() -> None:
    assert running_text("alpha-beta", "j2", "publish", 1.0) == (
        "Training @alpha · @beta ████████████ 100% · publishing (job j2)"
    )
