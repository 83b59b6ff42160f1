// The parts of io/Hdf5.hpp for files others fill in place: H5Skeleton (checkpoints written
// in parallel) and the selection of a C-order range of elements.
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "io/Hdf5.hpp"
#include "util/Error.hpp"

namespace hpctrain {
namespace {

// A folder for the skeleton: RAM-backed /dev/shm where there is one (its holes cost nothing),
// else TMPDIR or /tmp.
std::string skeleton_folder() {
  if (::access("/dev/shm", W_OK) == 0) return "/dev/shm";
  const char* tmp = std::getenv("TMPDIR");
  return tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
}

}  // namespace

H5Skeleton::H5Skeleton(const std::string& name, std::int64_t structure_bytes) : name_(name) {
  const std::string folder = skeleton_folder();
  // HDF5 cannot recover from a failed write (above): room for the whole structure first.
  struct statvfs fs {};
  const auto need = static_cast<unsigned long long>(std::max<std::int64_t>(structure_bytes, 0)) + (16ull << 20);
  if (::statvfs(folder.c_str(), &fs) == 0 && static_cast<unsigned long long>(fs.f_bavail) * fs.f_frsize < need) {
    throw RuntimeFailure(name + ": less than " + std::to_string(need >> 20) + " MiB free in " + folder +
                         " to build the file's structure");
  }
  std::string path = folder + "/hpctrain-skeleton-XXXXXX";
  fd_ = ::mkstemp(path.data());
  if (fd_ < 0) throw RuntimeFailure(path + ": cannot create: " + std::strerror(errno));
  path_ = path;
  file_ = H5File::create(path_, name);
}

H5Skeleton::~H5Skeleton() {
  file_ = H5File();  // closed unchecked (an error path) before its file goes
  if (fd_ >= 0) ::close(fd_);
  if (!path_.empty()) ::unlink(path_.c_str());
}

std::int64_t H5Skeleton::reserve(const std::string& name, hid_t file_type, const std::vector<std::int64_t>& shape) {
  const std::string ctx = name_ + ": reserving " + name;
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  H5Id space(h5_check(
      dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
      ctx));
  H5Id lcpl(h5_check(H5Pcreate(H5P_LINK_CREATE), ctx));
  h5_check(H5Pset_create_intermediate_group(lcpl, 1), ctx);
  H5Id dcpl(h5_check(H5Pcreate(H5P_DATASET_CREATE), ctx));
  h5_check(H5Pset_layout(dcpl, H5D_CONTIGUOUS), ctx);
  h5_check(H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY), ctx);
  h5_check(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER), ctx);
  H5Id ds(h5_check(H5Dcreate2(file_.id(), name.c_str(), file_type, space, lcpl, dcpl, H5P_DEFAULT), ctx));
  const haddr_t offset = H5Dget_offset(ds);
  const hssize_t elements = H5Sget_simple_extent_npoints(space);
  if (offset == HADDR_UNDEF || elements < 0) throw RuntimeFailure(ctx + ": HDF5 gave no place for its data");
  const auto bytes = static_cast<std::int64_t>(elements) * static_cast<std::int64_t>(H5Tget_size(file_type));
  reserved_.emplace_back(static_cast<std::int64_t>(offset), bytes);
  return static_cast<std::int64_t>(offset);
}

H5Skeleton::Image H5Skeleton::finish() {
  file_.close();
  struct stat st {};
  if (::fstat(fd_, &st) != 0) throw RuntimeFailure(name_ + ": cannot size the memory file: " + std::strerror(errno));
  Image image;
  image.size = static_cast<std::int64_t>(st.st_size);
  auto gaps = reserved_;
  gaps.emplace_back(image.size, 0);
  std::sort(gaps.begin(), gaps.end());
  std::int64_t at = 0;
  for (const auto& [offset, bytes] : gaps) {
    if (offset > at) {
      std::string piece(static_cast<std::size_t>(offset - at), '\0');
      if (::pread(fd_, piece.data(), piece.size(), at) != static_cast<ssize_t>(piece.size())) {
        throw RuntimeFailure(name_ + ": cannot read the memory file back: " + std::strerror(errno));
      }
      image.pieces.emplace_back(at, std::move(piece));
    }
    at = std::max(at, offset + bytes);
  }
  return image;
}

namespace {

// Adds elements [lo, hi) of the sub-array at start[0 .. dim) (dims shape[dim ..]) to `space`.
// The first block replaces the selection (H5S_SELECT_SET), so a single block stays a regular
// hyperslab.
void add_range(hid_t space, const std::vector<std::int64_t>& shape, std::size_t dim, std::vector<hsize_t>& start,
               std::int64_t lo, std::int64_t hi, bool& first_block, const std::string& ctx) {
  if (lo >= hi) return;
  std::int64_t stride = 1;  // elements per index of `dim`
  for (std::size_t k = dim + 1; k < shape.size(); ++k) stride *= shape[k];
  const std::int64_t a = lo / stride, b = hi / stride;
  if (dim + 1 < shape.size() && (a == b || lo % stride != 0)) {  // a part of index a
    start[dim] = static_cast<hsize_t>(a);
    add_range(space, shape, dim + 1, start, lo - a * stride, std::min(hi - a * stride, stride), first_block, ctx);
    if (a == b) return;
    lo = (a + 1) * stride;
  }
  const std::int64_t whole_end = dim + 1 < shape.size() ? b : hi;  // the last dimension: elements
  if (lo / stride < whole_end) {
    std::vector<hsize_t> first(start), count(shape.size(), 1);
    first[dim] = static_cast<hsize_t>(lo / stride);
    count[dim] = static_cast<hsize_t>(whole_end - lo / stride);
    for (std::size_t k = dim + 1; k < shape.size(); ++k) {
      first[k] = 0;
      count[k] = static_cast<hsize_t>(shape[k]);
    }
    const H5S_seloper_t op = first_block ? H5S_SELECT_SET : H5S_SELECT_OR;
    first_block = false;
    h5_check(H5Sselect_hyperslab(space, op, first.data(), nullptr, count.data(), nullptr), ctx);
  }
  if (dim + 1 < shape.size() && hi % stride != 0) {  // a part of index b
    start[dim] = static_cast<hsize_t>(b);
    add_range(space, shape, dim + 1, start, 0, hi - b * stride, first_block, ctx);
  }
}

}  // namespace

void select_c_order_range(hid_t space, const std::vector<std::int64_t>& shape, std::int64_t begin, std::int64_t end,
                          const std::string& context) {
  if (shape.empty()) {  // a scalar
    h5_check(H5Sselect_all(space), context);
    return;
  }
  std::vector<hsize_t> start(shape.size(), 0);
  bool first_block = true;
  add_range(space, shape, 0, start, begin, end, first_block, context);
  if (first_block) h5_check(H5Sselect_none(space), context);  // an empty range
}

}  // namespace hpctrain
