"""Files a run reads back: model files (:mod:`~nnscratch.files.model_files`, safetensors) and the
atomic write every output goes through (:mod:`~nnscratch.files.atomic`)."""
