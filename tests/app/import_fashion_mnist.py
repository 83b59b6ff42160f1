"""Fixture: imports the real Fashion-MNIST (Debian's dataset-fashion-mnist) into the
test data folder, then checks the file with `hpctrain inspect`."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
from hpctest import BIN, FASHION, TEST_DATA, Checks, run  # noqa: E402

c = Checks()
os.makedirs(TEST_DATA, exist_ok=True)
r = run([BIN, "import", "fashion-mnist", "--output", FASHION], timeout=240)
c.check("import exits 0", r.rc == 0, r.text)
c.check("import reports counts", "60000 train and 10000 test samples" in r.out, r.text)
r = run([BIN, "inspect", FASHION], timeout=240)
c.check("inspect exits 0", r.rc == 0, r.text)
c.check("inspect verifies all four hashes", r.out.count("sha256 ok") == 4, r.text)
c.check("inspect shows class balance", "0:6000 (10.0%)" in r.out and "9:1000 (10.0%)" in r.out, r.text)
c.check("inspect shows shapes and dtypes", "/train/images  uint8 [60000, 1, 28, 28]" in r.out, r.text)
c.finish()
