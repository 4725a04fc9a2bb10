// The web app's files, served by `isoguard serve` beside the API.
//
// StaticFiles reads a directory (the built app, <data dir>/web/dist) once, at start, into
// memory: only regular files with a known extension and a plain name (letters, digits, '.',
// '-', '_'; no leading '.') are kept, symlinks are never followed, and the count and sizes are
// bounded. A request names a file only through a route added for it, so no request path ever
// reaches the file system (no traversal, no surprise files). Every answer carries its content
// type, a strong ETag (a hash of the bytes) and Cache-Control; a matching If-None-Match is
// answered 304 without a body.
//
// A StaticFiles is immutable after Load; reading it from many threads at once is safe.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "server/http.h"
#include "server/router.h"

namespace isoguard::server {

struct StaticFileLimits {
  size_t max_files = 512;
  size_t max_file_bytes = size_t{4} << 20;    // 4 MiB
  size_t max_total_bytes = size_t{32} << 20;  // 32 MiB
  size_t max_depth = 4;                       // directories below the root
};

struct StaticFile {
  std::string content_type;
  std::string cache_control;
  std::string etag;  // quoted, strong
  std::string body;
};

class StaticFiles {
 public:
  // Reads every servable file under `root`. kNotFound when `root` is not a directory;
  // kBadInput (naming the file) when a limit is broken.
  static Result<StaticFiles> Load(const std::filesystem::path& root,
                                  const StaticFileLimits& limits = {});

  // The file at this URL path ("/app.js", "/vendor/uplot.js"; "/" is "/index.html"), or null.
  const StaticFile* Find(std::string_view url_path) const;

  // 200 with the file, 304 when If-None-Match names its ETag, 404 problem+json otherwise.
  HttpResponse Serve(const HttpRequest& request, std::string_view url_path) const;

  // The URL paths of the files, sorted.
  std::vector<std::string> Paths() const;
  size_t total_bytes() const { return total_bytes_; }

 private:
  std::map<std::string, StaticFile, std::less<>> files_;
  size_t total_bytes_ = 0;
};

// The content type for a file name's extension, or empty when such files are not served.
std::string_view StaticContentType(std::string_view file_name);

// Adds GET routes for every file (and "/" for /index.html), after the API's routes: a path the
// router already answers with GET is left to it.
void AddStaticRoutes(Router& router, std::shared_ptr<const StaticFiles> files);

}  // namespace isoguard::server
