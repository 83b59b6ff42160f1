#include "io/Hdf5.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "util/Error.hpp"
#include "util/Files.hpp"

namespace hpctrain {
namespace {

// HDF5's file-driver errors carry a long record (time, file descriptor, buffer address,
// sizes); the operation and the OS error are what a user can act on.
std::string concise(const std::string& desc) {
  const auto record = desc.find(": time = ");
  const auto os = desc.find("error message = '");
  if (record == std::string::npos || os == std::string::npos) return desc;
  const auto begin = os + 17;
  return desc.substr(0, record) + ": " + desc.substr(begin, desc.find('\'', begin) - begin);
}

herr_t innermost(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (n == 0 && err->desc != nullptr) *out = concise(err->desc);  // n == 0: where the error began
  return 0;
}

herr_t close_id(hid_t id) {
  switch (H5Iget_type(id)) {
    case H5I_FILE:
      return H5Fclose(id);
    case H5I_GROUP:
      return H5Gclose(id);
    case H5I_DATASET:
      return H5Dclose(id);
    case H5I_DATASPACE:
      return H5Sclose(id);
    case H5I_DATATYPE:
      return H5Tclose(id);
    case H5I_ATTR:
      return H5Aclose(id);
    case H5I_GENPROP_LST:
      return H5Pclose(id);
    default:
      return H5Idec_ref(id) < 0 ? -1 : 0;
  }
}

// A failed write-side HDF5 call: the message names `context`, HDF5's innermost reason and
// the OS error the call left in errno (the caller cleared errno before it).
[[noreturn]] void throw_write_failure(const std::string& context, int error) {
  const std::string reason = hdf5_error_reason();
  const std::string os = error != 0 ? std::strerror(error) : "";
  throw RuntimeFailure(context + (reason.empty() ? "" : " (HDF5: " + reason + ")") +
                       (os.empty() || reason.find(os) != std::string::npos ? "" : ": " + os));
}

std::string dtype_name(hid_t type) {
  const H5T_class_t cls = H5Tget_class(type);
  const std::size_t size = H5Tget_size(type);
  if (cls == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    return std::string(is_signed ? "int" : "uint") + std::to_string(8 * size);
  }
  if (cls == H5T_FLOAT) return "float" + std::to_string(8 * size);
  if (cls == H5T_STRING) return "string";
  return "other";
}

}  // namespace

H5Id& H5Id::operator=(H5Id&& o) noexcept {
  if (this != &o) {
    reset();
    id_ = o.id_;
    o.id_ = H5I_INVALID_HID;
  }
  return *this;
}

void H5Id::reset() {
  if (id_ >= 0 && H5Iis_valid(id_) > 0) close_id(id_);
  id_ = H5I_INVALID_HID;
}

void H5Id::close(const std::string& context) {
  if (id_ < 0) return;
  errno = 0;
  if (close_id(id_) < 0) throw_write_failure(context + ": cannot close", errno);
  id_ = H5I_INVALID_HID;
}

void silence_hdf5_errors() {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

std::string hdf5_error_reason() {
  std::string reason;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, &reason);
  H5Eclear2(H5E_DEFAULT);
  return reason;
}

hid_t h5_check(hid_t status, const std::string& context) {
  if (status >= 0) return status;
  const std::string reason = hdf5_error_reason();
  throw DataError(context + (reason.empty() ? "" : " (HDF5: " + reason + ")"));
}

std::string hdf5_library_version() {
  unsigned major = 0, minor = 0, release = 0;
  H5get_libversion(&major, &minor, &release);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release) +
#ifdef H5_HAVE_PARALLEL
         " (parallel)";
#else
         " (serial)";
#endif
}

H5File H5File::open_read(const std::string& path, MPI_Comm comm) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) throw DataError(path + ": no such file (run `hpctrain import` first?)");
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    hdf5_error_reason();
    throw DataError(path + ": not an HDF5 file");
  }
  H5File f;
  f.path_ = path;
  H5Id fapl(h5_check(H5Pcreate(H5P_FILE_ACCESS), path + ": cannot create file access list"));
  if (comm != MPI_COMM_NULL) {
    h5_check(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL), path + ": cannot set the MPI-IO driver");
    f.collective_ = true;
  }
  f.file_ = H5Id(h5_check(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl), path + ": cannot open HDF5 file"));
  return f;
}

H5File H5File::open_read_serial(const std::string& path) {
  return open_read(path, MPI_COMM_NULL);
}

H5File H5File::create(const std::string& path, const std::string& name) {
  H5File f;
  f.path_ = name.empty() ? path : name;
  errno = 0;
  const hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0) throw_write_failure(f.path_ + ": cannot create HDF5 file", errno);
  f.file_ = H5Id(id);
  return f;
}

void H5File::close() {
  if (!file_.valid()) return;
  // The flush writes what HDF5 still caches (metadata, last chunks); H5Fclose of a file
  // with objects still open would only drop the id and report nothing.
  errno = 0;
  if (H5Fflush(file_, H5F_SCOPE_GLOBAL) < 0) throw_write_failure(path_ + ": cannot write", errno);
  file_.close(path_);
}

H5File H5File::create_in_memory(const std::string& name) {
  H5File f;
  f.path_ = name;
  H5Id fapl(h5_check(H5Pcreate(H5P_FILE_ACCESS), name + ": cannot create file access list"));
  // Grows by 16 MB; no backing store: the bytes leave through image() only.
  h5_check(H5Pset_fapl_core(fapl, 16u << 20, 0), name + ": cannot set the in-memory driver");
  // Not `name` itself: HDF5 refuses to truncate a name this process holds open (a
  // checkpoint being rewritten while a reader has it); this name never reaches the disk.
  const std::string memory_name = "memory:" + name;
  f.file_ = H5Id(h5_check(H5Fcreate(memory_name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), name + ": cannot create"));
  return f;
}

std::string H5File::image() {
  h5_check(H5Fflush(file_, H5F_SCOPE_GLOBAL), path_ + ": cannot flush");
  const ssize_t size = H5Fget_file_image(file_, nullptr, 0);
  h5_check(size < 0 ? -1 : 0, path_ + ": cannot size the file image");
  std::string bytes(static_cast<std::size_t>(size), '\0');
  h5_check(H5Fget_file_image(file_, bytes.data(), bytes.size()) < 0 ? -1 : 0, path_ + ": cannot copy the file image");
  return bytes;
}

void write_hdf5_atomically(const std::string& path, const std::function<void(H5File&)>& fill) {
  std::string bytes;
  {
    H5File file = H5File::create_in_memory(path);
    fill(file);
    bytes = file.image();
    file.close();
  }
  write_file_atomic(path, bytes);
}

bool H5File::has(const std::string& object) const {
  // Check each path component so a missing parent group is not an error.
  std::size_t pos = 0;
  while (true) {
    pos = object.find('/', pos + 1);
    const std::string part = object.substr(0, pos);
    if (!part.empty() && part != "/") {
      const htri_t exists = H5Lexists(file_, part.c_str(), H5P_DEFAULT);
      if (exists <= 0) {
        hdf5_error_reason();
        return false;
      }
    }
    if (pos == std::string::npos) return true;
  }
}

bool H5File::has_attr(const std::string& object, const std::string& name) const {
  const htri_t e = H5Aexists_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT);
  if (e < 0) hdf5_error_reason();
  return e > 0;
}

std::string H5File::read_string_attr(const std::string& object, const std::string& name) const {
  const std::string ctx = path_ + ": attribute " + object + "@" + name;
  H5Id attr(
      h5_check(H5Aopen_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), ctx + " is missing"));
  H5Id type(h5_check(H5Aget_type(attr), ctx));
  if (H5Tget_class(type) != H5T_STRING) throw DataError(ctx + ": expected a string");
  if (H5Tis_variable_str(type) > 0) {
    char* value = nullptr;
    H5Id mem(H5Tcopy(H5T_C_S1));
    H5Tset_size(mem, H5T_VARIABLE);
    h5_check(H5Aread(attr, mem, &value), ctx + ": cannot read");
    std::string out = value ? value : "";
    H5free_memory(value);
    return out;
  }
  // One byte more than stored, null-terminated, so no character is cut for the terminator.
  const std::size_t size = H5Tget_size(type) + 1;
  std::string out(size, '\0');
  H5Id mem(H5Tcopy(H5T_C_S1));
  H5Tset_size(mem, size);
  h5_check(H5Aread(attr, mem, out.data()), ctx + ": cannot read");
  out.resize(out.find('\0') == std::string::npos ? size : out.find('\0'));
  return out;
}

std::int64_t H5File::read_int_attr(const std::string& object, const std::string& name) const {
  const std::string ctx = path_ + ": attribute " + object + "@" + name;
  H5Id attr(
      h5_check(H5Aopen_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), ctx + " is missing"));
  std::int64_t v = 0;
  h5_check(H5Aread(attr, H5T_NATIVE_INT64, &v), ctx + ": expected an integer");
  return v;
}

std::vector<double> H5File::read_double_array_attr(const std::string& object, const std::string& name) const {
  const std::string ctx = path_ + ": attribute " + object + "@" + name;
  H5Id attr(
      h5_check(H5Aopen_by_name(file_, object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), ctx + " is missing"));
  H5Id space(h5_check(H5Aget_space(attr), ctx));
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  std::vector<double> v(static_cast<std::size_t>(std::max<hssize_t>(n, 0)));
  h5_check(H5Aread(attr, H5T_NATIVE_DOUBLE, v.data()), ctx + ": expected numbers");
  return v;
}

void H5File::write_string_attr(const std::string& object, const std::string& name, const std::string& value) {
  const std::string ctx = path_ + ": writing attribute " + object + "@" + name;
  H5Id type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type, std::max<std::size_t>(1, value.size()));
  H5Tset_strpad(type, H5T_STR_NULLPAD);
  H5Id space(h5_check(H5Screate(H5S_SCALAR), ctx));
  H5Id attr(h5_check(
      H5Acreate_by_name(file_, object.c_str(), name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), ctx));
  h5_check(H5Awrite(attr, type, value.empty() ? "" : value.data()), ctx);
}

void H5File::write_int_attr(const std::string& object, const std::string& name, std::int64_t value) {
  const std::string ctx = path_ + ": writing attribute " + object + "@" + name;
  H5Id space(h5_check(H5Screate(H5S_SCALAR), ctx));
  H5Id attr(h5_check(H5Acreate_by_name(file_, object.c_str(), name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT,
                                       H5P_DEFAULT, H5P_DEFAULT),
                     ctx));
  h5_check(H5Awrite(attr, H5T_NATIVE_INT64, &value), ctx);
}

void H5File::write_double_array_attr(const std::string& object, const std::string& name, const std::vector<double>& v) {
  const std::string ctx = path_ + ": writing attribute " + object + "@" + name;
  const hsize_t n = v.size();
  H5Id space(h5_check(H5Screate_simple(1, &n, nullptr), ctx));
  H5Id attr(h5_check(H5Acreate_by_name(file_, object.c_str(), name.c_str(), H5T_IEEE_F64LE, space, H5P_DEFAULT,
                                       H5P_DEFAULT, H5P_DEFAULT),
                     ctx));
  h5_check(H5Awrite(attr, H5T_NATIVE_DOUBLE, v.data()), ctx);
}

void H5File::write_string_list(const std::string& dataset, const std::vector<std::string>& values) {
  const std::string ctx = path_ + ": writing " + dataset;
  std::size_t width = 1;
  for (const auto& s : values) width = std::max(width, s.size());
  std::vector<char> buffer(width * values.size(), '\0');
  for (std::size_t i = 0; i < values.size(); ++i) values[i].copy(buffer.data() + i * width, values[i].size());
  H5Id type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type, width);
  H5Tset_strpad(type, H5T_STR_NULLPAD);
  const hsize_t n = values.size();
  H5Id space(h5_check(H5Screate_simple(1, &n, nullptr), ctx));
  H5Id ds(h5_check(H5Dcreate2(file_, dataset.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), ctx));
  h5_check(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buffer.data()), ctx);
}

std::vector<std::string> H5File::read_string_list(const std::string& dataset) const {
  const std::string ctx = path_ + ": " + dataset;
  H5Id ds(h5_check(H5Dopen2(file_, dataset.c_str(), H5P_DEFAULT), ctx + " is missing"));
  H5Id type(h5_check(H5Dget_type(ds), ctx));
  if (H5Tget_class(type) != H5T_STRING || H5Tis_variable_str(type) > 0) {
    throw DataError(ctx + ": expected fixed-length strings");
  }
  const std::size_t width = H5Tget_size(type) + 1;
  H5Id space(h5_check(H5Dget_space(ds), ctx));
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  std::vector<char> buffer(width * static_cast<std::size_t>(n));
  H5Id mem(H5Tcopy(H5T_C_S1));
  H5Tset_size(mem, width);
  h5_check(H5Dread(ds, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buffer.data()), ctx + ": cannot read");
  std::vector<std::string> out;
  for (hssize_t i = 0; i < n; ++i) {
    std::string s(buffer.data() + i * width, width);
    out.push_back(s.substr(0, s.find('\0')));
  }
  return out;
}

DatasetInfo dataset_info(const H5File& file, const std::string& name) {
  const std::string ctx = file.path() + ": dataset " + name;
  if (!file.has(name)) throw DataError(ctx + " is missing");
  H5Id ds(h5_check(H5Dopen2(file.id(), name.c_str(), H5P_DEFAULT), ctx + ": cannot open"));
  H5Id space(h5_check(H5Dget_space(ds), ctx));
  const int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(static_cast<std::size_t>(std::max(rank, 0)));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  H5Id type(h5_check(H5Dget_type(ds), ctx));
  DatasetInfo info;
  for (auto d : dims) info.shape.push_back(static_cast<std::int64_t>(d));
  info.dtype = dtype_name(type);
  info.element_size = H5Tget_size(type);
  return info;
}

void read_rows(const H5File& file, const std::string& name, std::int64_t row_begin, std::int64_t rows, hid_t mem_type,
               void* out) {
  const std::string ctx = file.path() + ": reading rows " + std::to_string(row_begin) + ".." +
                          std::to_string(row_begin + rows) + " of " + name;
  H5Id ds(h5_check(H5Dopen2(file.id(), name.c_str(), H5P_DEFAULT), ctx));
  H5Id space(h5_check(H5Dget_space(ds), ctx));
  const int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  if (row_begin < 0 || row_begin + rows > static_cast<std::int64_t>(dims[0])) {
    throw DataError(ctx + ": out of range (the dataset has " + std::to_string(dims[0]) + " rows)");
  }
  std::vector<hsize_t> start(dims.size(), 0), count(dims);
  start[0] = static_cast<hsize_t>(row_begin);
  count[0] = static_cast<hsize_t>(rows);
  H5Id mem_space;
  if (rows > 0) {
    h5_check(H5Sselect_hyperslab(space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr), ctx);
    mem_space = H5Id(h5_check(H5Screate_simple(rank, count.data(), nullptr), ctx));
  } else {
    H5Sselect_none(space);
    mem_space = H5Id(h5_check(H5Screate_simple(rank, dims.data(), nullptr), ctx));
    H5Sselect_none(mem_space);
  }
  H5Id dxpl(h5_check(H5Pcreate(H5P_DATASET_XFER), ctx));
  if (file.collective()) h5_check(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE), ctx);
  h5_check(H5Dread(ds, mem_type, mem_space, space, dxpl, out), ctx);
}

}  // namespace hpctrain
