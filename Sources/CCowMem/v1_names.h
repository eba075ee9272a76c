/*
 * While engine v2 is built beside the first engine (COWMEM_ENGINE=v2),
 * dispatch.c defines the public functions and calls one engine or the
 * other. Included by the first engine's files after internal.h, this
 * renames their definitions of the public functions that differ between
 * the engines; the calls between them follow. Delete with the first engine.
 */
#ifndef COWMEM_V1_NAMES_H
#define COWMEM_V1_NAMES_H

#define cowmem_create cowmem__v1_create
#define cowmem_clone cowmem__v1_clone
#define cowmem_data cowmem__v1_data
#define cowmem_size cowmem__v1_size
#define cowmem_destroy cowmem__v1_destroy
#define cowmem_dirty_pages cowmem__v1_dirty_pages
#define cowmem_reset cowmem__v1_reset
/* function-like: struct cowmem_stats keeps its name */
#define cowmem_stats(...) cowmem__v1_stats(__VA_ARGS__)
#define cowmem_save cowmem__v1_save
#define cowmem_load cowmem__v1_load

#endif /* COWMEM_V1_NAMES_H */
