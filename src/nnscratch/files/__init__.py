"""Files a run reads back: model files (:mod:`~nnscratch.files.model_files`, safetensors) and the
atomic write every output goes through (:mod:`~nnscratch.files.atomic`), and JSON parsed safely from
files others may have written (:mod:`~nnscratch.files.json_text`)."""
