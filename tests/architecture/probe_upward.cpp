// Must NOT compile: comm/ sits below train/, so train's headers are not on comm's include
// path (tests/architecture/test_layers.py builds this and expects the failure).
#include "train/Trainer.hpp"

int hpctrain_probe_upward() {
  return 0;
}
