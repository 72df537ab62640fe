# Turn a file into a C array at build time: cmake -DIN=file -DOUT=file.c -DNAME=symbol -P embed.cmake
# Used for the web/ assets so reports and dashboards work offline from the binary alone.
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
file(WRITE "${OUT}" "/* Generated from ${IN} by scripts/embed.cmake; do not edit. */\n"
     "#include <stddef.h>\n"
     "extern const char ${NAME}[];\nextern const size_t ${NAME}_len;\n"
     "const char ${NAME}[] = {${body} 0};\n"
     "const size_t ${NAME}_len = sizeof(${NAME}) - 1;\n")
