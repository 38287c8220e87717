"""Rebuild the corpus's kept files (those whose builders need packages the tests do not install).

    python -m tests.hostile.files.build_files      (from the repository root; needs scikit-learn, skl2onnx)
"""

from __future__ import annotations

from tests.hostile.models import ZIPMAP_FILE, build_zipmap_model


def main() -> None:
    model = build_zipmap_model()
    model.producer_version = ""  # keep the file identical across skl2onnx patch releases
    ZIPMAP_FILE.write_bytes(model.SerializeToString())
    print(f"wrote {ZIPMAP_FILE} ({ZIPMAP_FILE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
