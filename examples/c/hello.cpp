// hello.cpp: the C API from C++17 through a small RAII wrapper (handles owned by unique_ptr
// with the library's free functions as deleters, errors as exceptions).
//
//   hello -m MODEL [options] [MESSAGE...]
//
// The options of chat.c: -n N, -c N, -t N, --temp T, --top-k K, --top-p P,
// --repeat-penalty R, --seed S, --kv-f32. Replies to each MESSAGE (without messages, to each
// line of standard input) in one conversation, streaming each reply to standard output on a
// line of its own, after checking that tokenizing and detokenizing each message gives it back.
//
// Build (from the repository root, after `cargo build --release`):
//   c++ -std=c++17 -O2 examples/c/hello.cpp -Iinclude -Ltarget/release -lchatglm
//       -Wl,-rpath,target/release -o hello
// or, installed (tools/install.sh), with pkg-config or CMake (examples/cmake).

#include "chatglm.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace chatglm {

// A failed call: its status and the library's message.
class Error : public std::runtime_error {
public:
    Error(chatglm_status status, const std::string &what)
        : std::runtime_error(std::string(chatglm_status_name(status)) + ": " + what),
          status_(status) {}
    chatglm_status status() const noexcept { return status_; }

private:
    chatglm_status status_;
};

inline void check(chatglm_status status) {
    if (status != CHATGLM_OK) {
        throw Error(status, chatglm_last_error());
    }
}

struct ModelDeleter {
    void operator()(chatglm_model *m) const noexcept { chatglm_model_free(m); }
};
struct SessionDeleter {
    void operator()(chatglm_session *s) const noexcept { chatglm_session_free(s); }
};
struct StringDeleter {
    void operator()(char *s) const noexcept { chatglm_string_free(s); }
};
using ModelPtr = std::unique_ptr<chatglm_model, ModelDeleter>;
using SessionPtr = std::unique_ptr<chatglm_session, SessionDeleter>;
using StringPtr = std::unique_ptr<char, StringDeleter>;

// Receives each piece of a reply; return false to stop.
using OnPiece = std::function<bool(std::string_view)>;

// What the C callback needs to reach the C++ one, and an exception it could not throw.
struct Stream {
    const OnPiece *on_piece;
    std::exception_ptr error;
};

extern "C" inline int stream_piece(const char *piece, size_t len, void *user_data) {
    auto *stream = static_cast<Stream *>(user_data);
    try {
        return (*stream->on_piece)(std::string_view(piece, len)) ? 0 : 1;
    } catch (...) {
        // Exceptions must not unwind through the library: stop, and rethrow after the call.
        stream->error = std::current_exception();
        return 1;
    }
}

class Model {
public:
    explicit Model(const std::string &path,
                   const chatglm_model_options &options = chatglm_model_options_default()) {
        chatglm_model *raw = nullptr;
        check(chatglm_model_load(path.c_str(), &options, &raw));
        model_.reset(raw);
    }

    chatglm_model_info info() const {
        chatglm_model_info info{};
        check(chatglm_model_get_info(model_.get(), &info));
        return info;
    }

    std::vector<chatglm_token> tokenize(const std::string &text, bool add_prefix) const {
        size_t n = 0;
        chatglm_status st =
            chatglm_tokenize(model_.get(), text.c_str(), add_prefix, nullptr, 0, &n);
        if (st != CHATGLM_ERR_BUFFER_TOO_SMALL) {
            check(st);
        }
        std::vector<chatglm_token> ids(n);
        check(chatglm_tokenize(model_.get(), text.c_str(), add_prefix, ids.data(), ids.size(),
                               &n));
        return ids;
    }

    std::string detokenize(const std::vector<chatglm_token> &ids) const {
        char *raw = nullptr;
        check(chatglm_detokenize(model_.get(), ids.data(), ids.size(), &raw));
        StringPtr text(raw);
        return std::string(text.get());
    }

    const chatglm_model *get() const noexcept { return model_.get(); }

private:
    ModelPtr model_;
};

class Session {
public:
    explicit Session(const Model &model) {
        chatglm_session *raw = nullptr;
        check(chatglm_session_new(model.get(), &raw));
        session_.reset(raw);
    }

    // Replies to `message` after the conversation so far, streaming through `on_piece`.
    std::string chat(const std::string &message, const chatglm_generate_options &options,
                     const OnPiece &on_piece) {
        Stream stream{&on_piece, nullptr};
        char *raw = nullptr;
        chatglm_status st = chatglm_chat(session_.get(), message.c_str(), &options,
                                         stream_piece, &stream, &raw);
        StringPtr reply(raw);
        if (stream.error) {
            std::rethrow_exception(stream.error);
        }
        check(st);
        return std::string(reply.get());
    }

    void reset() { check(chatglm_session_reset(session_.get())); }

private:
    SessionPtr session_;
};

}  // namespace chatglm

// Everything the command line says (the options of chat.c that apply here).
struct Args {
    std::string model_path;
    chatglm_model_options model = chatglm_model_options_default();
    chatglm_generate_options gen = chatglm_generate_options_default();
    std::vector<std::string> messages;
};

// Parses the command line; an error message on failure.
static std::string parse_args(int argc, char **argv, Args &a) {
    for (int i = 1; i < argc; i++) {
        std::string opt = argv[i];
        if (opt == "--kv-f32") {
            a.model.kv_type = CHATGLM_KV_F32;
            continue;
        }
        if (opt.size() < 2 || opt[0] != '-') {
            a.messages.assign(argv + i, argv + argc);
            break;
        }
        if (i + 1 >= argc) {
            return opt + " needs a value";
        }
        const char *val = argv[++i];
        if (opt == "-m") {
            a.model_path = val;
        } else if (opt == "-n") {
            a.gen.max_new_tokens = static_cast<uint32_t>(std::strtoul(val, nullptr, 10));
        } else if (opt == "-c") {
            a.model.n_ctx = static_cast<uint32_t>(std::strtoul(val, nullptr, 10));
        } else if (opt == "-t") {
            a.model.n_threads = static_cast<uint32_t>(std::strtoul(val, nullptr, 10));
        } else if (opt == "--temp") {
            a.gen.temperature = std::strtof(val, nullptr);
        } else if (opt == "--top-k") {
            a.gen.top_k = static_cast<int32_t>(std::strtol(val, nullptr, 10));
        } else if (opt == "--top-p") {
            a.gen.top_p = std::strtof(val, nullptr);
        } else if (opt == "--repeat-penalty") {
            a.gen.repeat_penalty = std::strtof(val, nullptr);
        } else if (opt == "--seed") {
            a.gen.seed = std::strtoull(val, nullptr, 10);
        } else {
            return "unknown option " + opt;
        }
    }
    if (a.model_path.empty()) {
        return "usage: hello -m MODEL [-n N] [-c N] [-t N] [--temp T] [--top-k K] [--top-p P] "
               "[--repeat-penalty R] [--seed S] [--kv-f32] [MESSAGE...]";
    }
    return "";
}

int main(int argc, char **argv) {
    Args args;
    std::string error = parse_args(argc, argv, args);
    if (!error.empty()) {
        std::cerr << "hello: " << error << '\n';
        return 2;
    }
    if (args.messages.empty()) {
        for (std::string line; std::getline(std::cin, line);) {
            if (!line.empty() && line.back() == '\r') {
                line.pop_back();
            }
            args.messages.push_back(line);
        }
    }
    const chatglm_generate_options &options = args.gen;
    const std::vector<std::string> &messages = args.messages;
    try {
        chatglm::Model model(args.model_path, args.model);
        chatglm_model_info info = model.info();
        std::cerr << "chatglm " << chatglm_version() << ": ChatGLM" << info.family << ", "
                  << info.n_layers << " layers, vocab " << info.vocab_size << ", "
                  << info.kernels << " kernels\n";
        chatglm::Session session(model);
        for (const std::string &message : messages) {
            if (model.detokenize(model.tokenize(message, true)) != message) {
                std::cerr << "hello: tokenize/detokenize does not give back \"" << message
                          << "\"\n";
                return 1;
            }
            std::string streamed;
            std::string reply = session.chat(message, options, [&](std::string_view piece) {
                streamed += piece;
                std::cout << piece << std::flush;
                return true;
            });
            std::cout << '\n';
            if (reply != streamed) {
                std::cerr << "hello: the returned reply differs from the streamed text\n";
                return 1;
            }
        }
    } catch (const std::exception &e) {
        std::cerr << "hello: " << e.what() << '\n';
        return 1;
    }
    return 0;
}
