import io

from pipelines.local_run import _StepLogFilter


def test_console_shows_step_starts_and_summaries_and_the_log_keeps_everything():
    log, console = io.StringIO(), io.StringIO()
    stream = _StepLogFilter(log, console, verbose=False)
    text = (
        "16:36:30.504 - INFO - Executing task \x1b[96m'tune'\x1b[0m\n"
        "    [KFP Executor] Got executor_input:\n"
        '    {"inputs": {"parameterValues": {"num_trials": 4}}}\n'
        "    [mlpipe] tune: best random_forest cv roc_auc=0.73\n"
        "    train: Dataset( name='train',\n"
    )
    # kfp writes in pieces; a line split across writes is still one line.
    stream.write(text[:50])
    stream.write(text[50:])
    assert console.getvalue() == "tune: started\ntune: best random_forest cv roc_auc=0.73\n"
    assert log.getvalue() == text


def test_verbose_shows_every_line():
    log, console = io.StringIO(), io.StringIO()
    _StepLogFilter(log, console, verbose=True).write("a\nb\n")
    assert console.getvalue() == "a\nb\n"


def test_a_url_password_never_reaches_the_log_or_the_console():
    log, console = io.StringIO(), io.StringIO()
    stream = _StepLogFilter(log, console, verbose=True)
    text = '    {"url": "postgresql://scott:TopSecret123@db.example/sales"}\n    tail'
    for start in range(0, len(text), 7):  # split anywhere, even inside the URL
        stream.write(text[start : start + 7])
    stream.finish()
    shown = '    {"url": "postgresql://scott:***@db.example/sales"}\n'
    assert log.getvalue() == shown + "    tail"
    assert console.getvalue() == shown
