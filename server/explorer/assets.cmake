# assets.cmake - builds the explorer page (server/explorer/*.html, *.js,
# *.css) into embedding-server: embed.cmake turns the files into a C array
# each, with a content hash for the ETag, in explorer_assets.c of the build
# tree. Included from the top-level CMakeLists.txt after the executable.
file(GLOB EXPLORER_FILES CONFIGURE_DEPENDS
     ${CMAKE_CURRENT_LIST_DIR}/*.html ${CMAKE_CURRENT_LIST_DIR}/*.js
     ${CMAKE_CURRENT_LIST_DIR}/*.css)
list(SORT EXPLORER_FILES)
set(EXPLORER_C ${CMAKE_CURRENT_BINARY_DIR}/explorer_assets.c)
add_custom_command(
  OUTPUT ${EXPLORER_C}
  COMMAND ${CMAKE_COMMAND} -DOUT=${EXPLORER_C} "-DFILES=${EXPLORER_FILES}"
          -P ${CMAKE_CURRENT_LIST_DIR}/embed.cmake
  DEPENDS ${EXPLORER_FILES} ${CMAKE_CURRENT_LIST_DIR}/embed.cmake
  COMMENT "Embedding the explorer page"
  VERBATIM)
target_sources(embedding-server PRIVATE ${EXPLORER_C})
target_include_directories(embedding-server PRIVATE ${CMAKE_CURRENT_LIST_DIR}/..)
