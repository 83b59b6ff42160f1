// The translation unit that builds the shared precompiled <torch/torch.h> (src/CMakeLists.txt).
