#include "server/static_files.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "server/problem.h"

namespace isoguard::server {
namespace {

namespace fs = std::filesystem;

struct TypeByExtension {
  std::string_view extension;
  std::string_view content_type;
};

// The only files served: what a browser app is made of. Anything else in the directory (a
// source map, an editor's backup) stays private.
constexpr std::array<TypeByExtension, 11> kTypes{{
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".json", "application/json"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".txt", "text/plain; charset=utf-8"},
    {".webmanifest", "application/manifest+json"},
    {".woff2", "font/woff2"},
}};

bool PlainName(std::string_view name) {
  if (name.empty() || name.size() > 128 || name.front() == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '-' || ch == '_';
  });
}

// FNV-1a, 64 bits: an ETag only has to change when the bytes do.
std::string Etag(std::string_view bytes) {
  uint64_t h = 14695981039346656037ull;
  for (char byte : bytes) {
    const auto ch = static_cast<unsigned char>(byte);
    h ^= ch;
    h *= 1099511628211ull;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string tag = "\"";
  for (int shift = 60; shift >= 0; shift -= 4) tag += kHex[(h >> shift) & 0xf];
  tag += "-" + std::to_string(bytes.size()) + "\"";
  return tag;
}

// If-None-Match: a list of entity tags (weak ones compared weakly) or "*".
bool NoneMatchHits(std::string_view header, std::string_view etag) {
  size_t pos = 0;
  while (pos < header.size()) {
    size_t comma = header.find(',', pos);
    if (comma == std::string_view::npos) comma = header.size();
    std::string_view item = header.substr(pos, comma - pos);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (item == "*") return true;
    if (item.starts_with("W/")) item.remove_prefix(2);
    if (item == etag) return true;
    pos = comma + 1;
  }
  return false;
}

void AddSecurityHeaders(HttpResponse& r) {
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.headers.emplace_back("X-Frame-Options", "DENY");
  // The app loads nothing from elsewhere: scripts, styles and API calls are this origin's.
  r.headers.emplace_back("Content-Security-Policy",
                         "default-src 'self'; img-src 'self' data: blob:; "
                         "media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
                         "frame-ancestors 'none'; form-action 'self'");
}

Result<std::string> ReadWhole(const fs::path& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::Internal("cannot read " + path.string());
  std::string bytes;
  char buffer[16384];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    bytes.append(buffer, static_cast<size_t>(in.gcount()));
    if (bytes.size() > max_bytes) {
      return Error::BadInput("is larger than " + std::to_string(max_bytes) + " bytes",
                             path.string());
    }
  }
  return bytes;
}

}  // namespace

std::string_view StaticContentType(std::string_view file_name) {
  for (const auto& t : kTypes) {
    if (file_name.size() > t.extension.size() && file_name.ends_with(t.extension)) {
      return t.content_type;
    }
  }
  return {};
}

Result<StaticFiles> StaticFiles::Load(const fs::path& root, const StaticFileLimits& limits) {
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(root, ec)) &&
      !(fs::is_symlink(fs::symlink_status(root, ec)) && fs::is_directory(root, ec))) {
    return Error::NotFound("no web app directory at " + root.string());
  }
  StaticFiles files;
  // Breadth first, by hand, so that symlinks below the root are never followed.
  std::vector<std::pair<fs::path, std::string>> dirs{{root, ""}};
  for (size_t i = 0; i < dirs.size(); ++i) {
    const auto [dir, url_prefix] = dirs[i];
    fs::directory_iterator it(dir, ec);
    if (ec) return Error::Internal("cannot list " + dir.string() + ": " + ec.message());
    for (const fs::directory_entry& entry : it) {
      const std::string name = entry.path().filename().string();
      if (!PlainName(name)) continue;
      const fs::file_status st = entry.symlink_status(ec);
      if (ec) continue;
      if (fs::is_directory(st)) {
        const size_t depth =
            static_cast<size_t>(std::count(url_prefix.begin(), url_prefix.end(), '/') + 1);
        if (depth <= limits.max_depth) dirs.emplace_back(entry.path(), url_prefix + "/" + name);
        continue;
      }
      if (!fs::is_regular_file(st)) continue;
      const std::string_view type = StaticContentType(name);
      if (type.empty()) continue;
      if (files.files_.size() >= limits.max_files) {
        return Error::BadInput("more than " + std::to_string(limits.max_files) + " files",
                               root.string());
      }
      auto bytes = ReadWhole(entry.path(), limits.max_file_bytes);
      if (!bytes.ok()) return bytes.error();
      files.total_bytes_ += bytes->size();
      if (files.total_bytes_ > limits.max_total_bytes) {
        return Error::BadInput(
            "the files add up to more than " + std::to_string(limits.max_total_bytes) + " bytes",
            root.string());
      }
      StaticFile f;
      f.content_type = std::string(type);
      // No file name carries a version, so every answer is revalidated (a 304 is cheap) and a
      // new release is seen at once.
      f.cache_control = "no-cache";
      f.etag = Etag(*bytes);
      f.body = std::move(*bytes);
      files.files_.emplace(url_prefix + "/" + name, std::move(f));
    }
  }
  return files;
}

const StaticFile* StaticFiles::Find(std::string_view url_path) const {
  if (url_path == "/") url_path = "/index.html";
  auto it = files_.find(url_path);
  return it == files_.end() ? nullptr : &it->second;
}

HttpResponse StaticFiles::Serve(const HttpRequest& request, std::string_view url_path) const {
  const StaticFile* f = Find(url_path);
  if (f == nullptr) return NotFoundProblem(url_path);
  HttpResponse r;
  r.content_type = f->content_type;
  r.headers.emplace_back("ETag", f->etag);
  r.headers.emplace_back("Cache-Control", f->cache_control);
  AddSecurityHeaders(r);
  const std::string* none_match = request.header("if-none-match");
  if (none_match != nullptr && NoneMatchHits(*none_match, f->etag)) {
    r.status = 304;
    return r;
  }
  r.status = 200;
  r.body = f->body;
  return r;
}

std::vector<std::string> StaticFiles::Paths() const {
  std::vector<std::string> paths;
  paths.reserve(files_.size());
  for (const auto& [path, file] : files_) paths.push_back(path);
  return paths;
}

void AddStaticRoutes(Router& router, std::shared_ptr<const StaticFiles> files) {
  auto paths = files->Paths();
  if (files->Find("/index.html") != nullptr) paths.insert(paths.begin(), "/");
  for (const std::string& path : paths) {
    // A path the API already answers stays the API's (a stray dist/openapi.json, say).
    if (router.Match("GET", path).handler != nullptr) continue;
    router.Add("GET", path, [files, path](const HttpRequest& request, const PathParams&) {
      return files->Serve(request, path);
    });
  }
}

}  // namespace isoguard::server
