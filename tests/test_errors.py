"""Scripts turn a user error into one line and exit status 2."""

from edgecell.errors import ModelError, script_main


def test_script_main_prints_one_line_and_returns_2(capsys):
    @script_main
    def main() -> int:
        raise ModelError("model.tflite: not a model; expected a .tflite, .xml or .onnx file")

    assert main() == 2
    err = capsys.readouterr().err
    assert err == "error: model.tflite: not a model; expected a .tflite, .xml or .onnx file\n"


def test_script_main_passes_the_exit_status_through():
    assert script_main(lambda: None)() == 0
    assert script_main(lambda: 3)() == 3
