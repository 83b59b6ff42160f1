// Runs a TorchScript file (analysis/export_formats.py) in LibTorch C++ for the export test:
//   torchscript_run MODEL.pt INPUT.bin OUTPUT.bin
// INPUT.bin and OUTPUT.bin: int64 ndims, int64 dims..., then float32 values in C order
// (little-endian, as the test writes and reads them with NumPy).
#include <torch/script.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <vector>

namespace {

torch::Tensor read_tensor(const char* path) {
  std::ifstream in(path, std::ios::binary);
  std::int64_t ndims = 0;
  if (!in.read(reinterpret_cast<char*>(&ndims), sizeof ndims) || ndims < 1 || ndims > 8) {
    throw std::runtime_error(std::string(path) + ": bad header");
  }
  std::vector<std::int64_t> dims(static_cast<std::size_t>(ndims));
  in.read(reinterpret_cast<char*>(dims.data()), static_cast<std::streamsize>(dims.size() * sizeof(std::int64_t)));
  torch::Tensor t = torch::empty(dims, torch::kFloat32);
  in.read(reinterpret_cast<char*>(t.data_ptr<float>()), static_cast<std::streamsize>(t.numel() * sizeof(float)));
  if (!in) throw std::runtime_error(std::string(path) + ": truncated");
  return t;
}

void write_tensor(const char* path, torch::Tensor t) {
  t = t.to(torch::kFloat32).contiguous();
  std::ofstream out(path, std::ios::binary);
  const std::int64_t ndims = t.dim();
  out.write(reinterpret_cast<const char*>(&ndims), sizeof ndims);
  for (std::int64_t d : t.sizes()) out.write(reinterpret_cast<const char*>(&d), sizeof d);
  out.write(reinterpret_cast<const char*>(t.data_ptr<float>()),
            static_cast<std::streamsize>(t.numel() * sizeof(float)));
  if (!out) throw std::runtime_error(std::string(path) + ": write failed");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL.pt INPUT.bin OUTPUT.bin\n", argv[0]);
    return 2;
  }
  try {
    torch::jit::script::Module module = torch::jit::load(argv[1]);
    module.eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor output = module.forward({read_tensor(argv[2])}).toTensor();
    write_tensor(argv[3], output);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "torchscript_run: %s\n", e.what());
    return 1;
  }
  return 0;
}
